"""Result records the worker stages return to the job runner.

Stages (extract, entities, renditions) read a local file and write local files into an output
folder; the job runner alone talks to the store and the database. These records are what the
runner copies into the database and the manifest. Light module: no heavy imports.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class FileKind:
    """What an upload really is, from its bytes (never from its name)."""

    kind: str  # "pdf" | "image"
    format: str  # PDF, JPEG, PNG, TIFF, WEBP, GIF, BMP, HEIF
    mime: str
    extension: str  # canonical, with the dot: ".pdf", ".jpg" ...


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


@dataclass(frozen=True)
class RenditionResult:
    """One written rendition: out_dir/renditions/<filename>."""

    name: str  # thumbnail | preview | web | png | archival
    filename: str
    format: str  # JPEG | PNG | WEBP | TIFF
    mime: str
    width: int
    height: int
    bytes: int
