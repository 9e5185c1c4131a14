"""Document-level fixes the sentence-by-sentence CRF cannot make: abbreviations and repeated names.

Why: a CRF sees one sentence, so "sirolimus (SRL)" teaches it nothing about "SRL" three sentences
later, and an abbreviation is most of what it misses on abstracts. Two rules, both chosen on a
held-out part of the training data (model/README.md):
* an abbreviation defined in parentheses right after a mention ("carbamazepine (CBZ)", the first
  letter of the short form starting a word of the long form, Schwartz & Hearst 2003) gets the
  mention's label wherever it stands as a whole word, and at its definition;
* a name the model tagged once is tagged at its other whole-word occurrences in the same text
  (same letters and case), where the model was silent.
"""
from __future__ import annotations

import bisect
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobs.entities.model.predict import Mention

_ABBREV = re.compile(r"\s?\(\s?([A-Za-z0-9][\w\-\u03b1-\u03c9,.+]{0,11}?)\s?(?:\)|;|,)")
_WORD = re.compile(r"[^\W_]+")


def _definitions(text: str, mentions: list["Mention"]) -> dict[str, tuple[str, float]]:
    out: dict[str, tuple[str, float]] = {}
    for m in mentions:
        a = _ABBREV.match(text, m.end)
        if a is None:
            continue
        sf = a.group(1).rstrip(",.")
        if len(sf) < 2 or not any(c.isupper() for c in sf) or sf.lower() == text[m.begin:m.end].lower():
            continue
        initials = {w.group()[0].lower() for w in _WORD.finditer(text, m.begin, m.end)}
        if sf[0].lower() in initials:
            out.setdefault(sf, (m.label, m.score))
    return out


def _free(taken: list[tuple[int, int]], begin: int, end: int) -> bool:
    """Does [begin, end) overlap none of the sorted, non-overlapping ``taken`` spans?"""
    k = bisect.bisect_right(taken, (begin, 1 << 62)) - 1
    if k >= 0 and taken[k][1] > begin:
        return False
    return not (k + 1 < len(taken) and taken[k + 1][0] < end)


def propagate(text: str, mentions: list["Mention"], repeats: bool = True) -> list["Mention"]:
    """Mentions plus abbreviation and repeated-name mentions the model missed, in text order."""
    from jobs.entities.model.predict import Mention

    found: dict[str, tuple[str, float]] = {}
    if repeats:
        for m in mentions:
            s = text[m.begin:m.end]
            if len(s) >= 3 and s[0].isalnum() and s[-1].isalnum():
                found.setdefault(s, (m.label, m.score))
    found.update(_definitions(text, mentions))
    if not found:
        return mentions
    taken = sorted((m.begin, m.end) for m in mentions)
    extra: list[Mention] = []
    pattern = re.compile(r"(?<![\w-])(" + "|".join(re.escape(k) for k in sorted(found, key=len, reverse=True))
                         + r")(?![\w])")
    for hit in pattern.finditer(text):
        if _free(taken, hit.start(), hit.end()):
            label, score = found[hit.group(1)]
            extra.append(Mention(hit.start(), hit.end(), label, score))
    if not extra:
        return mentions
    return sorted(mentions + extra, key=lambda m: (m.begin, m.end))
