"""Run the shipped CRF on a text: entity mentions with exact offsets and a confidence.

Why a CRF (python-crfsuite): it tags 20,000+ tokens a second on one core with no numpy, GPU or
download, its model is a few MB in the package, and with dictionary features it reaches the
accuracy targets of issue 8 (figures in model/README.md). The tagger is opened once per process
(``lru_cache``), so a worker forked from the warm server shares it.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import pycrfsuite

from jobs.entities.model.dictionary import Dictionary, load_terms
from jobs.entities.model.features import dict_tags, sequence_features
from jobs.entities.model.postprocess import propagate
from jobs.entities.model.tokenize import Token, sentences, tokens

MODEL_PATH = Path(__file__).resolve().parent / "entities.crfsuite"
TERMS_SUFFIX = ".terms.txt.gz"  # the model's training-mention dictionaries sit beside it
LABELS = {"Chemical": "MEDICATION", "Disease": "MEDICAL_CONDITION"}


class Mention(NamedTuple):
    """A tagged mention: offsets into the text, the corpus label (Chemical, Disease), mean marginal."""

    begin: int
    end: int
    label: str
    score: float


@lru_cache(maxsize=1)
def tagger() -> pycrfsuite.Tagger:
    """The model at ``MODEL_PATH``, opened once per process (the benchmark may point it elsewhere first)."""
    t = pycrfsuite.Tagger()
    t.open(str(MODEL_PATH))
    return t


@lru_cache(maxsize=1)
def terms() -> dict[str, Dictionary]:
    """The shipped model's training-mention dictionaries (empty when the model was built without them)."""
    return load_terms(MODEL_PATH.with_suffix(TERMS_SUFFIX))


def decode(seq: list[Token], tags: list[str]) -> list[tuple[int, int, str]]:
    """BIO tags -> (first token, last token + 1, label); an I- after O or another label starts a mention."""
    out: list[tuple[int, int, str]] = []
    start, label = -1, ""
    for i, tag in enumerate(tags + ["O"]):
        kind, _, lab = tag.partition("-")
        if start >= 0 and (kind != "I" or lab != label):
            out.append((start, i, label))
            start = -1
        if kind == "B" or (kind == "I" and start < 0):
            start, label = i, lab
    return out


def predict(text: str, model: pycrfsuite.Tagger | None = None, scores: bool = True,
            abbreviations: bool = True, repeats: bool = False,
            model_terms: dict[str, Dictionary] | None = None) -> list[Mention]:
    """Mentions in ``text`` in order. ``model`` and its ``model_terms`` default to the shipped ones
    (training passes its own).

    ``abbreviations`` / ``repeats``: the document-level rules of ``postprocess``; repeats is off by
    default because it lowered F1 on held-out NCBI training abstracts (model/README.md).
    """
    if not text or text.isspace():
        return []
    crf = model or tagger()
    toks = tokens(text)
    dtags = dict_tags(toks, model_terms if model is not None else terms())
    out: list[Mention] = []
    k = 0
    for seq in sentences(text, toks):
        d = dtags[k:k + len(seq)]
        k += len(seq)
        tags = crf.tag(sequence_features(text, seq, d))
        for a, b, label in decode(seq, tags):
            score = 0.0
            if scores:
                score = sum(crf.marginal(tags[i], i) for i in range(a, b)) / (b - a)
            out.append(Mention(seq[a].begin, seq[b - 1].end, label, round(score, 4)))
    if abbreviations:
        out = propagate(text, out, repeats)
    return out
