"""Token features of the CRF: the word, its shape and affixes, its neighbours, dictionary hits.

Why these: they are the classic features of biomedical CRF taggers (BANNER, tmChem): chemical
names show themselves by affixes ("-olol", "-mycin", "hydroxy-") and shape ("5-HT", "Ca2"),
disease names by suffixes ("-itis", "-emia") and context ("induced", "patients with"), and the
dictionaries carry the vocabulary the training data lacks. Features of a word alone are cached,
since a text repeats its words; context features are then a few string joins per token.
"""
from __future__ import annotations

import re
from functools import lru_cache

from jobs.entities.model.dictionary import HYPHENS, Dictionary, dictionaries, key
from jobs.entities.model.tokenize import Token

_REPEAT = re.compile(r"(.)\1+")


@lru_cache(maxsize=200_000)
def shape(word: str) -> str:
    """Letter case and digit classes, runs collapsed: "Naloxone" -> "Xx", "5-HT" -> "d-X"."""
    s = "".join("X" if c.isupper() else "x" if c.islower() else "d" if c.isdigit() else c for c in word)
    return _REPEAT.sub(r"\1", s)[:6]


@lru_cache(maxsize=200_000)
def word_features(word: str) -> tuple[str, ...]:
    """Features of the word itself (cached: independent of context)."""
    low = word.lower()
    f = ["w=" + low, "s=" + shape(word)]
    n = len(low)
    if n > 2:
        for k in (2, 3, 4, 5):
            if n > k:
                f.append(f"p{k}={low[:k]}")
                f.append(f"x{k}={low[-k:]}")
    if word.isupper() and n > 1:
        f.append("UP")
    elif word[:1].isupper():
        f.append("TI")
    if any(c.isdigit() for c in word):
        f.append("DG" if not word.isdigit() else "NUM")
    if n == 1 and not word.isalnum():
        f.append("PU")
    f.append("L=" + (str(n) if n < 4 else "4-6" if n < 7 else "7-10" if n < 11 else "11+"))
    return tuple(f)


def dict_tags(toks: list[Token], extra: dict[str, Dictionary] | None = None) -> list[str]:
    """Per token, the dictionaries it is inside, with B for the first token: "BD", "IC", "BD.IC"...

    ``extra``: the model's own term dictionaries (training mentions, see ``train.term_dictionaries``).
    """
    keys = ["" if t.text in HYPHENS else key(t.text) for t in toks]
    tags = [[] for _ in toks]
    for name, d in (dictionaries() | (extra or {})).items():
        for a, b in d.spans(keys):
            tags[a].append("B" + name)
            for i in range(a + 1, b):
                tags[i].append("I" + name)
    return [".".join(t) for t in tags]


def sequence_features(text: str, toks: list[Token], dtags: list[str]) -> list[list[str]]:
    """The feature strings of each token of one sequence (crfsuite's ItemSequence input)."""
    n = len(toks)
    low = [t.text.lower() for t in toks]
    shapes = [shape(t.text) for t in toks]
    out: list[list[str]] = []
    for i, t in enumerate(toks):
        f = list(word_features(t.text))
        if i == 0 or toks[i - 1].end < t.begin:
            f.append("SP")  # space (or start) before: "[3H]-naloxone" is one name, "rats clonidine" two
        if i > 0:
            f += ["w-1=" + low[i - 1], "s-1=" + shapes[i - 1], "b=" + low[i - 1] + "|" + low[i]]
            if i > 1:
                f.append("w-2=" + low[i - 2])
        else:
            f.append("BOS")
        if i + 1 < n:
            f += ["w+1=" + low[i + 1], "s+1=" + shapes[i + 1], "b+=" + low[i] + "|" + low[i + 1]]
            if i + 2 < n:
                f.append("w+2=" + low[i + 2])
        else:
            f.append("EOS")
        d = dtags[i]
        if d:
            f += ["d=" + x for x in d.split(".")]
        if i > 0 and dtags[i - 1]:
            f += ["d-1=" + x for x in dtags[i - 1].split(".")]
        if i + 1 < n and dtags[i + 1]:
            f += ["d+1=" + x for x in dtags[i + 1].split(".")]
        out.append(f)
    return out
