"""Train the entities CRF on NCBI-disease train (+ BC5CDR train), tune on a held-out part of TRAIN.

    .venv/bin/python -m jobs.entities.model.train [--corpus ../shared/corpus] [--no-bc5cdr]
        [--holdout 0.2] [--c1 0.05] [--c2 0.01] [--iterations 150] [--out PATH]

With ``--holdout F`` a fraction F of the training abstracts of each corpus (chosen by a hash of
the PMID, so the same every run) is kept out of training and scored (strict spans), which is how
the settings were chosen; the development splits are never read here. ``--holdout 0`` trains on
everything, which is how the shipped model is built (see model/README.md).

Why a script in the package: the model must be rebuilt from public data by anyone, with the
same code that tags at run time (features, tokeniser), so the two can never drift.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import pycrfsuite

from jobs.entities.model.dictionary import Dictionary, load_terms, mention_terms
from jobs.entities.model.features import dict_tags, sequence_features
from jobs.entities.model.predict import MODEL_PATH, TERMS_SUFFIX, predict
from jobs.entities.model.tokenize import sentences, tokens

REPO = Path(__file__).resolve().parents[3]
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus"
Doc = tuple[str, str, set[tuple[int, int, str]]]


def read_pubtator(path: Path, collapse: str | None = None) -> list[Doc]:
    """PubTator abstracts: (pmid, title + " " + abstract, {(begin, end, type)}); duplicate PMIDs dropped."""
    docs: list[Doc] = []
    seen: set[str] = set()
    pmid = title = abstract = ""
    gold: set[tuple[int, int, str]] = set()
    with path.open(encoding="utf-8") as fh:
        for line in list(fh) + ["\n"]:
            line = line.rstrip("\n")
            if not line.strip():
                if pmid and pmid not in seen:
                    docs.append((pmid, title + " " + abstract, gold))
                    seen.add(pmid)
                pmid = title = abstract = ""
                gold = set()
            elif "|t|" in line[:20]:
                pmid, title = line.split("|t|", 1)
            elif "|a|" in line[:20]:
                abstract = line.split("|a|", 1)[1]
            else:
                parts = line.split("\t")
                if len(parts) >= 5 and parts[1].isdigit():
                    gold.add((int(parts[1]), int(parts[2]), collapse or parts[4]))
    return docs


def labelled(text: str, gold: set[tuple[int, int, str]],
             extra: dict[str, Dictionary] | None = None) -> list[tuple[list[list[str]], list[str]]]:
    """(features, BIO labels) per sentence; a mention not on token boundaries is left out."""
    toks = tokens(text)
    starts = {b: (e, k) for b, e, k in sorted(gold, key=lambda g: (g[0], -g[1]))}
    labels = ["O"] * len(toks)
    i = 0
    while i < len(toks):
        hit = starts.get(toks[i].begin)
        if hit:
            end, kind = hit
            j = i
            while j < len(toks) and toks[j].end <= end:
                j += 1
            if j > i and toks[j - 1].end == end:
                labels[i] = "B-" + kind
                for m in range(i + 1, j):
                    labels[m] = "I-" + kind
                i = j
                continue
        i += 1
    dtags = dict_tags(toks, extra)
    out = []
    k = 0
    for seq in sentences(text, toks):
        out.append((sequence_features(text, seq, dtags[k:k + len(seq)]), labels[k:k + len(seq)]))
        k += len(seq)
    return out


def held_out(pmid: str, fraction: float) -> bool:
    return fraction > 0 and int(hashlib.sha256(pmid.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction


def evaluate(docs: list[Doc], model: pycrfsuite.Tagger, kinds: tuple[str, ...],
             model_terms: dict[str, Dictionary] | None = None, **options: bool) -> dict[str, dict[str, float]]:
    """Strict-span precision, recall, F1 per type and micro over ``kinds``."""
    counts = {k: [0, 0, 0] for k in kinds}  # tp, pred, gold
    for _, text, gold in docs:
        pred = {(m.begin, m.end, m.label) for m in predict(text, model, scores=False, model_terms=model_terms, **options)}
        for k in kinds:
            p = {x for x in pred if x[2] == k}
            g = {x for x in gold if x[2] == k}
            counts[k][0] += len(p & g)
            counts[k][1] += len(p)
            counts[k][2] += len(g)
    counts["micro"] = [sum(c[i] for c in counts.values()) for i in range(3)]
    out = {}
    for k, (tp, np_, ng) in counts.items():
        p, r = tp / np_ if np_ else 0.0, tp / ng if ng else 0.0
        out[k] = {"P": round(p, 4), "R": round(r, 4), "F1": round(2 * p * r / (p + r), 4) if p + r else 0.0}
    return out


FOLDS = 5


def write_terms(path: Path, docs: list[Doc]) -> None:
    """The training-mention dictionary shipped beside the model (``name<TAB>type``)."""
    import gzip

    with gzip.open(path, "wt", encoding="utf-8", compresslevel=9) as fh:
        fh.write("# training mentions of the corpora this model was trained on (see model/README.md)\n")
        for name, kind in sorted(mention_terms(docs).items()):
            fh.write(f"{name}\t{kind}\n")


def fold_terms(docs: list[Doc]) -> list[tuple[Doc, dict[str, Dictionary]]]:
    """Each training abstract with dictionaries of the mentions of the OTHER folds (jackknifed).

    Why: with its own mentions in the dictionary the feature would be right every time in training
    and the model would trust it more than it deserves on new text; from other folds it is right
    as often as it will be at run time, where the dictionary holds all training mentions.
    """
    fold = [int(hashlib.sha256(d[0].encode()).hexdigest()[8:16], 16) % FOLDS for d in docs]
    out = []
    for k in range(FOLDS):
        others = [d for d, f in zip(docs, fold) if f != k]
        extra = {"TC": Dictionary(), "TD": Dictionary()}
        for name, kind in mention_terms(others).items():
            extra["TC" if kind == "Chemical" else "TD"].add(name)
        out += [(d, extra) for d, f in zip(docs, fold) if f == k]
    return out


def silver_chemicals(ncbi: list[Doc], bc5cdr: list[Doc], params: dict, out: Path) -> list[Doc]:
    """NCBI abstracts with the chemicals a BC5CDR-only model finds in them added to their gold.

    Why: NCBI-disease annotates diseases only, so without this its drug names would teach the
    model that drugs are "O" and cost chemical recall. The first model never sees NCBI text.
    """
    first = out.with_suffix(".chemicals.tmp")
    trainer = pycrfsuite.Trainer(verbose=False)
    trainer.set_params(params)
    for _, text, gold in bc5cdr:
        for xseq, yseq in labelled(text, gold):
            trainer.append(xseq, yseq)
    trainer.train(str(first))
    model = pycrfsuite.Tagger()
    model.open(str(first))
    added = 0
    docs: list[Doc] = []
    for pmid, text, gold in ncbi:
        extra = {(m.begin, m.end, m.label) for m in predict(text, model, scores=False)
                 if m.label == "Chemical" and not any(m.begin < e and b < m.end for b, e, _ in gold)}
        added += len(extra)
        docs.append((pmid, text, gold | extra))
    model.close()
    first.unlink()
    print(f"silver chemicals added to NCBI abstracts: {added}", file=sys.stderr)
    return docs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--no-bc5cdr", action="store_true", help="train on NCBI-disease only (public domain)")
    ap.add_argument("--silver", action="store_true",
                    help="add a first model's chemicals to NCBI abstracts (they are unannotated there)")
    ap.add_argument("--terms", action="store_true",
                    help="training-mention dictionary features (jackknifed), shipped beside the model")
    ap.add_argument("--holdout", type=float, default=0.0, help="fraction of TRAIN kept out and scored")
    ap.add_argument("--c1", type=float, default=0.1)
    ap.add_argument("--c2", type=float, default=0.01)
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--min-freq", type=float, default=1)
    ap.add_argument("--out", type=Path, default=MODEL_PATH)
    args = ap.parse_args(argv)
    ner = args.corpus / "ner"
    sets = {"ncbi": (read_pubtator(ner / "ncbi-disease" / "NCBItrainset_corpus.txt", "Disease"), ("Disease",))}
    if not args.no_bc5cdr:
        sets["bc5cdr"] = (read_pubtator(ner / "bc5cdr" / "CDR_TrainingSet.PubTator.txt"), ("Chemical", "Disease"))
    params = {"c1": args.c1, "c2": args.c2, "max_iterations": args.iterations,
              "feature.possible_transitions": True, "feature.minfreq": args.min_freq}
    holdout = {name: [d for d in docs if held_out(d[0], args.holdout)] for name, (docs, _) in sets.items()}
    train = {name: [d for d in docs if not held_out(d[0], args.holdout)] for name, (docs, _) in sets.items()}
    if "bc5cdr" in train and args.silver:
        train["ncbi"] = silver_chemicals(train["ncbi"], train["bc5cdr"], params, args.out)
    trainer = pycrfsuite.Trainer(verbose=False)
    trainer.set_params(params)
    t0 = time.perf_counter()
    n_seq = 0
    all_train = [d for docs in train.values() for d in docs]
    terms_path = args.out.with_suffix(TERMS_SUFFIX)
    if args.terms:
        pairs = fold_terms(all_train)
        write_terms(terms_path, all_train)
    else:
        pairs = [(d, None) for d in all_train]
        terms_path.unlink(missing_ok=True)
    for (_, text, gold), extra in pairs:
        for xseq, yseq in labelled(text, gold, extra):
            trainer.append(xseq, yseq)
            n_seq += 1
    print(f"{n_seq} sequences, features in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    trainer.train(str(args.out))
    print(f"trained in {time.perf_counter() - t0:.0f} s -> {args.out} ({args.out.stat().st_size:,} bytes)",
          file=sys.stderr)
    if args.holdout > 0:
        model = pycrfsuite.Tagger()
        model.open(str(args.out))
        model_terms = load_terms(terms_path)
        for name, (_, kinds) in sets.items():
            for label, opts in (("crf", {"abbreviations": False}), ("crf+abbrev", {"repeats": False}),
                                ("crf+abbrev+repeats", {"repeats": True})):
                res = evaluate(holdout[name], model, kinds, model_terms, **opts)
                print(f"{name} held-out ({len(holdout[name])} docs) {label}: "
                      + "; ".join(f"{k} P {v['P']:.3f} R {v['R']:.3f} F1 {v['F1']:.3f}" for k, v in res.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
