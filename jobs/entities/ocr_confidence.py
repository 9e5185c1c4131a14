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
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any

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
    def from_json(cls, data: bytes, threshold: float) -> "LowConfidence":
        """From pages.json's bytes, one page at a time (see :func:`iter_pages`)."""
        return cls.from_pages(iter_pages(data), threshold)

    @classmethod
    def from_pages(cls, pages: Iterable[dict[str, Any]], threshold: float) -> "LowConfidence":
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


def iter_pages(data: bytes) -> Iterator[dict[str, Any]]:
    """The page records of pages.json, parsed one at a time.

    Why: pages.json of a long scan holds every word with its box (tens of MB); parsed whole it
    would need several times that in Python objects. The extract stage writes one page record
    per line ("[", then each record on its own line, commas between, "]"; see
    jobs/extract/text.py ``_Outputs.write_page``), so lines are parsed one by one. A file laid
    out otherwise is parsed whole.
    """
    lines = io.BytesIO(data)
    if lines.readline().strip() != b"[" or not _one_record(lines.readline()):
        yield from json.loads(data)
        return
    lines.seek(0)
    lines.readline()
    for raw in lines:
        line = raw.strip().rstrip(b",")
        if line.startswith(b"{"):
            yield json.loads(line)
        elif line not in (b"", b"]"):
            raise ValueError("pages.json is not laid out one page per line")


def _one_record(line: bytes) -> bool:
    """Is this line a whole page record (the line layout), or the start of an indented one?"""
    line = line.strip().rstrip(b",")
    if line in (b"]", b""):
        return True  # no pages at all
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False
