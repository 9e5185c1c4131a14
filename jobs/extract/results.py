"""What the extract stage returns to its job: the pages it wrote and how.

The stage reads a local file and writes local files into an output folder; the job alone talks to
the store and the database, copying these records into the page rows and the manifest. Light
module: no heavy imports.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class PageResult:
    page_no: int  # 1-based
    source: str  # "text-layer" | "ocr" | "empty"
    width: float  # points for PDF pages, pixels for images
    height: float
    rotation: int = 0  # degrees clockwise applied before OCR (0/90/180/270)
    dpi: int | None = None  # raster resolution OCR ran at; None for text-layer pages
    chars: int = 0
    words: int = 0
    mean_confidence: float | None = None  # 0..100, OCR pages only
    languages: str | None = None  # tesseract -l value the page was read with, OCR pages only


@dataclass
class ExtractResult:
    """Written files: out_dir/text.txt, out_dir/pages.json and, for scanned input, searchable.pdf."""

    pages: list[PageResult]
    language: str
    searchable_pdf: bool = False
    tool_versions: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ocr_pages(self) -> int:
        return sum(1 for p in self.pages if p.source == "ocr")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ocr_pages"] = self.ocr_pages
        return d
