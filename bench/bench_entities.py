"""Benchmark of the local entity extractor on DEVELOPMENT splits (the model never trained or tuned on them).

    .venv/bin/python bench/bench_entities.py [--corpus ../shared/corpus] [--json out.json] [--repeat 3]
        [--model PATH.crfsuite]

Reports precision / recall / F1, exact-span (strict) and overlap match, and strict micro-F1 per corpus, for
  * BC5CDR development set: Chemical -> MEDICATION, Disease -> MEDICAL_CONDITION;
  * NCBI-disease development set: all mentions -> MEDICAL_CONDITION;
  * medExtractR tuning notes (target drug tacrolimus/Prograf only; partial gold): drug mentions and
    their attributes (Strength/DoseStrength/DoseAmt/Dose/Route/Frequency/IntakeTime);
and throughput in words (whitespace-separated) and characters per second. Systems compared:
  * local      - jobs.entities.local as shipped: the CRF model, then lexicon spans where it is silent;
  * model      - the CRF model alone (with its abbreviation rule), no lexicon;
  * local-lex  - the lexicons and rules without the model (the extractor before the model);
  * dict-train - baseline: every mention of the corpus's own TRAINING split, longest match,
                 case-insensitive, tagged with its most frequent type (the classic memorisation baseline).
``--model`` scores another model file (e.g. the build without BC5CDR) in place of the shipped one.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from jobs.entities import local  # noqa: E402
from jobs.entities.model import predict as model_predict  # noqa: E402
from jobs.entities.model.train import read_pubtator  # noqa: E402  (the training reader: one PubTator parser)

DEFAULT_CORPUS = Path(os.environ.get("MEDINTAKE_CORPUS", REPO.parent / "shared" / "corpus"))
TYPE_OF = {"MEDICATION": "Chemical", "MEDICAL_CONDITION": "Disease"}

Doc = tuple[str, str, set[tuple[int, int, str]]]  # id, text, gold (begin, end, type)


# --- corpora ---------------------------------------------------------------------------------------
def read_medextractr(folder: Path) -> list[tuple[str, str, list[tuple[str, int, int]]]]:
    notes = []
    for ann in sorted(folder.glob("tune_note*.realigned.ann")):
        text = (folder / (ann.name.split(".")[0] + ".txt")).read_text(encoding="utf-8")
        spans = []
        for line in ann.read_text(encoding="utf-8").splitlines():
            if line.startswith("T"):
                _, info, _surface = line.split("\t")
                kind, b, e = info.split()
                spans.append((kind, int(b), int(e)))
        notes.append((ann.name.split(".")[0], text, spans))
    return notes


# --- systems ---------------------------------------------------------------------------------------
def train_dictionary(path: Path, collapse: str | None = None) -> dict[str, str]:
    """Training-split mention -> most frequent type (lower-cased)."""
    votes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for _, text, gold in read_pubtator(path, collapse):
        for b, e, kind in gold:
            votes[text[b:e].lower()][kind] += 1
    return {m: c.most_common(1)[0][0] for m, c in votes.items() if len(m) >= 2}


def dictionary_system(terms: dict[str, str]) -> Callable[[str], set[tuple[int, int, str]]]:
    lex = local.Lexicon()
    for term, kind in terms.items():
        cat = "MEDICATION" if kind == "Chemical" else "MEDICAL_CONDITION"
        lex.add(term, local.Entry(cat, "X"))

    def run(text: str) -> set[tuple[int, int, str]]:
        return {(s.begin, s.end, TYPE_OF[s.entry.category]) for s in local.match(text, lex, rules=False)}
    return run


def local_system() -> Callable[[str], set]:
    """The whole extractor as shipped (model, lexicons, attributes, traits), scored on its entities."""
    def run(text: str) -> set[tuple[int, int, str]]:
        res = local.extract(text)
        return {(e["BeginOffset"], e["EndOffset"], TYPE_OF[e["Category"]]) for e in res["Entities"]
                if e["Category"] in TYPE_OF}
    return run


def model_system() -> Callable[[str], set]:
    """The CRF alone, with its abbreviation rule."""
    def run(text: str) -> set[tuple[int, int, str]]:
        return {(m.begin, m.end, m.label) for m in model_predict.predict(text, scores=False)}
    return run


def lexicon_system() -> Callable[[str], set]:
    """The lexicons, suffix rules, modifiers and abbreviations without the model (the 1.0 extractor's spans)."""
    def run(text: str) -> set[tuple[int, int, str]]:
        return {(s.begin, s.end, TYPE_OF[s.entry.category]) for s in local.find_spans(text, use_model=False)
                if s.entry.category in TYPE_OF}
    return run


# --- scoring ---------------------------------------------------------------------------------------
def prf(tp_p: int, n_pred: int, tp_g: int, n_gold: int) -> dict[str, float]:
    p = tp_p / n_pred if n_pred else 0.0
    r = tp_g / n_gold if n_gold else 0.0
    return {"P": round(p, 3), "R": round(r, 3), "F1": round(2 * p * r / (p + r), 3) if p + r else 0.0,
            "pred": n_pred, "gold": n_gold}


def score(docs: list[Doc], system: Callable[[str], set], kinds: Iterable[str]) -> dict:
    """Exact and overlap P/R/F1 per type, plus throughput."""
    out: dict = {}
    preds = []
    t0 = time.perf_counter()
    for _, text, _ in docs:
        preds.append(system(text))
    seconds = time.perf_counter() - t0
    chars = sum(len(t) for _, t, _ in docs)
    words = sum(len(t.split()) for _, t, _ in docs)
    micro = [0, 0, 0, 0]
    for kind in kinds:
        ex = [0, 0, 0, 0]  # tp_pred, n_pred, tp_gold, n_gold
        ov = [0, 0, 0, 0]
        for (_, _, gold), pred in zip(docs, preds):
            g = {(b, e) for b, e, k in gold if k == kind}
            p = {(b, e) for b, e, k in pred if k == kind}
            ex[0] += len(p & g)
            ex[2] += len(p & g)
            ov[0] += sum(1 for pb, pe in p if any(pb < ge and gb < pe for gb, ge in g))
            ov[2] += sum(1 for gb, ge in g if any(pb < ge and gb < pe for pb, pe in p))
            for acc in (ex, ov):
                acc[1] += len(p)
                acc[3] += len(g)
        out[kind] = {"exact": prf(*ex), "overlap": prf(*ov)}
        micro = [a + b for a, b in zip(micro, ex)]
    out["micro_exact"] = prf(*micro)
    out["chars_per_s"] = int(chars / seconds) if seconds else 0
    out["words_per_s"] = int(words / seconds) if seconds else 0
    return out


ATTR_MAP = {"Strength": {"STRENGTH", "DOSAGE"}, "DoseStrength": {"DOSAGE", "STRENGTH"}, "DoseAmt": {"DOSAGE"},
            "Dose": {"DOSAGE"}, "Route": {"ROUTE_OR_MODE"}, "Frequency": {"FREQUENCY"},
            "IntakeTime": {"FREQUENCY"}}


def score_medextractr(notes: list) -> dict:
    """Target drug only: gold DrugName spans and their attributes; predictions of entities overlapping them."""
    drug = [0, 0, 0, 0]
    att_ex = [0, 0, 0, 0]
    att_ov = [0, 0, 0, 0]
    strict_type = [0, 0]  # attributes whose exact type matches the natural mapping (DoseAmt -> DOSAGE ...)
    for _, text, spans in notes:
        res = local.extract(text)
        gold_drugs = [(b, e) for k, b, e in spans if k == "DrugName"]
        gold_attrs = [(k, b, e) for k, b, e in spans if k != "DrugName"]
        target_names = {text[b:e].lower() for b, e in gold_drugs}
        pred_drugs = [e for e in res["Entities"] if e["Category"] == "MEDICATION"
                      and (e["Text"].lower() in target_names
                           or any(e["BeginOffset"] < ge and gb < e["EndOffset"] for gb, ge in gold_drugs))]
        drug[1] += len(pred_drugs)
        drug[3] += len(gold_drugs)
        drug[0] += sum(1 for e in pred_drugs if (e["BeginOffset"], e["EndOffset"]) in gold_drugs)
        drug[2] += sum(1 for b, e in gold_drugs if any((p["BeginOffset"], p["EndOffset"]) == (b, e) for p in pred_drugs))
        pattrs = [a for e in pred_drugs if any(e["BeginOffset"] < ge and gb < e["EndOffset"] for gb, ge in gold_drugs)
                  for a in e["Attributes"]]
        for acc, test in ((att_ex, lambda a, b, e: (a["BeginOffset"], a["EndOffset"]) == (b, e)),
                          (att_ov, lambda a, b, e: a["BeginOffset"] < e and b < a["EndOffset"])):
            acc[1] += len(pattrs)
            acc[3] += len(gold_attrs)
            acc[0] += sum(1 for a in pattrs if any(a["Type"] in ATTR_MAP[k] and test(a, b, e) for k, b, e in gold_attrs))
            acc[2] += sum(1 for k, b, e in gold_attrs if any(a["Type"] in ATTR_MAP[k] and test(a, b, e) for a in pattrs))
    return {"target_drug_exact": prf(*drug), "attributes_exact": prf(*att_ex), "attributes_overlap": prf(*att_ov)}


def throughput(corpus: Path, repeat: int) -> dict:
    """chars/s of the full extractor on clinical notes (all medExtractR notes + medspaCy summary, x50)."""
    med = corpus / "ner" / "clinical-medication"
    texts = [p.read_text(encoding="utf-8") for p in sorted(med.rglob("*.txt"))]
    text = "\f".join(texts) * 50
    local.extract("warm up the lexicon")
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = local.extract(text)
        runs.append(time.perf_counter() - t0)
    best = statistics.median(runs)
    return {"chars": len(text), "words": len(text.split()), "entities": len(res["Entities"]),
            "chars_per_s": int(len(text) / best), "words_per_s": int(len(text.split()) / best)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--model", type=Path, help="a model file to use instead of the shipped one")
    args = ap.parse_args(argv)
    ner = args.corpus / "ner"
    if args.model:
        model_predict.MODEL_PATH = args.model.resolve()
        model_predict.tagger.cache_clear()
        local.model_categories.cache_clear()
    t0 = time.perf_counter()
    local.default_lexicon()
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model_predict.tagger()
    local.extract("Warm up: aspirin for headache.")  # dictionaries of the model's features
    model_s = time.perf_counter() - t0
    results: dict = {"lexicon_load_s": round(load_s, 3), "lexicon_terms": local.default_lexicon().size,
                     "model": model_predict.MODEL_PATH.name, "model_bytes": model_predict.MODEL_PATH.stat().st_size,
                     "model_load_s": round(model_s, 3)}

    cdr_dev = read_pubtator(ner / "bc5cdr" / "CDR_DevelopmentSet.PubTator.txt")
    cdr_dict = train_dictionary(ner / "bc5cdr" / "CDR_TrainingSet.PubTator.txt")
    ncbi_dev = read_pubtator(ner / "ncbi-disease" / "NCBIdevelopset_corpus.txt", collapse="Disease")
    ncbi_dict = train_dictionary(ner / "ncbi-disease" / "NCBItrainset_corpus.txt", collapse="Disease")
    systems = {
        "local": (local_system(), local_system()),
        "model": (model_system(), model_system()),
        "local-lex": (lexicon_system(), lexicon_system()),
        "dict-train": (dictionary_system(cdr_dict), dictionary_system(ncbi_dict)),
    }
    for name, (cdr_sys, ncbi_sys) in systems.items():
        results[f"bc5cdr-dev/{name}"] = score(cdr_dev, cdr_sys, ("Chemical", "Disease"))
        results[f"ncbi-dev/{name}"] = score(ncbi_dev, ncbi_sys, ("Disease",))
    results["medextractr-tune/local"] = score_medextractr(
        read_medextractr(ner / "clinical-medication" / "medExtractR" / "mxr_tune"))
    results["throughput/local"] = throughput(args.corpus, args.repeat)
    print(format_table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def format_table(results: dict) -> str:
    lines = [f"lexicon: {results['lexicon_terms']} terms, loaded in {results['lexicon_load_s']} s; "
             f"model {results['model']}: {results['model_bytes']:,} bytes, loaded with its dictionaries in "
             f"{results['model_load_s']} s", "",
             "| corpus / system | type | exact P | exact R | exact F1 | overlap P | overlap R | overlap F1 | words/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key, res in results.items():
        if not (key.startswith("bc5cdr") or key.startswith("ncbi")):
            continue
        for kind in ("Chemical", "Disease"):
            if kind in res:
                ex, ov = res[kind]["exact"], res[kind]["overlap"]
                lines.append(f"| {key} | {kind} | {ex['P']:.3f} | {ex['R']:.3f} | {ex['F1']:.3f} | {ov['P']:.3f} | "
                             f"{ov['R']:.3f} | {ov['F1']:.3f} | {res['words_per_s']:,} |")
        mi = res["micro_exact"]
        lines.append(f"| {key} | **micro** | {mi['P']:.3f} | {mi['R']:.3f} | **{mi['F1']:.3f}** | | | | |")
    mx = results["medextractr-tune/local"]
    lines += ["", "| medExtractR tune (target drug) | P | R | F1 | pred | gold |", "|---|---|---|---|---|---|"]
    for k, v in mx.items():
        lines.append(f"| {k} | {v['P']:.3f} | {v['R']:.3f} | {v['F1']:.3f} | {v['pred']} | {v['gold']} |")
    tp = results["throughput/local"]
    lines += ["", f"throughput of the whole extractor (clinical notes x50, {tp['words']:,} words, {tp['chars']:,} chars, "
                  f"median of runs): {tp['words_per_s']:,} words/s, {tp['chars_per_s']:,} chars/s, "
                  f"{tp['entities']:,} entities"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
