"""LOW_CONFIDENCE for entities read from OCR words the engine was unsure of.

Why: an entity is only as good as the characters under it. Tesseract gives every word a
confidence (0-100) and pages.json keeps it with the word's offset in its page's text, and the
page's ``text_offset`` in text.txt (see jobs/extract/text.py), so each OCR word maps to a range of
text.txt. An entity, attribute or trait-bearing span that overlaps a word below the threshold
(setting ``ocr_low_confidence``) gets Comprehend Medical's LOW_CONFIDENCE trait, scored
1 - confidence/100 (at least 0.5), so a reviewer sees which readings to check. Text-layer pages
carry confidence 100 and are never marked.
"""
from __future__ import annotations

import bisect
from typing import Any, Iterable

TRAIT = "LOW_CONFIDENCE"


class LowConfidence:
    """Sorted low-confidence word ranges of one text.txt, queried per entity."""

    def __init__(self, spans: Iterable[tuple[int, int, float]]) -> None:
        self.spans = sorted(spans)
        self._starts = [b for b, _, _ in self.spans]
        self._longest = max((e - b for b, e, _ in self.spans), default=0)

    def __len__(self) -> int:
        return len(self.spans)

    @classmethod
    def from_pages(cls, pages: list[dict[str, Any]], threshold: float) -> "LowConfidence":
        """Words of OCR'd pages below ``threshold``, as (begin, end, confidence) in text.txt."""
        spans = []
        for page in pages:
            if page.get("source") != "ocr":
                continue
            base = int(page.get("text_offset") or 0)
            for w in page.get("words", []):
                conf, off = w.get("confidence"), w.get("offset")
                if off is None or conf is None or conf < 0 or conf >= threshold:
                    continue  # tesseract's -1 marks non-words (blocks, lines), not doubt
                spans.append((base + int(off), base + int(off) + len(w.get("text", "")), float(conf)))
        return cls(spans)

    def lowest(self, begin: int, end: int) -> float | None:
        """The lowest confidence of the low words overlapping [begin, end), if any."""
        k = bisect.bisect_left(self._starts, begin - self._longest)
        found = [c for b, e, c in self.spans[k:bisect.bisect_left(self._starts, end)] if b < end and begin < e]
        return min(found) if found else None

    def mark(self, response: dict) -> int:
        """Add the trait to the entities (and attributes) of ``response`` over low words; count them."""
        marked = 0
        for e in response.get("Entities", []):
            for item in [e, *e.get("Attributes", [])]:
                conf = self.lowest(item["BeginOffset"], item["EndOffset"])
                if conf is None:
                    continue
                traits = item.setdefault("Traits", [])
                if not any(t["Name"] == TRAIT for t in traits):
                    traits.append({"Name": TRAIT, "Score": round(max(0.5, 1 - conf / 100), 4)})
                    marked += item is e
        return marked
