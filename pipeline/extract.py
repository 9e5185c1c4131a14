"""The text/OCR stage: one upload in, ``text.txt`` + ``pages.json`` (+ ``searchable.pdf``) out.

The job runner calls :func:`extract_text` after ``detect.identify``/``detect.validate``. Digital
PDF pages take their text from the text layer and never reach tesseract; pages without a usable
text layer and every image frame are OCR'd (see :mod:`pipeline.ocr`). Pages are handled one by one
and their results streamed to disk, so memory does not grow with the page count. Outputs are written
under temporary names and renamed at the end: a failed or repeated run never leaves a mix.

Text layout of ``text.txt``: pages joined by a form feed ("\\f"); each page's ``text_offset`` in
``pages.json`` is where its text starts, and every line/word carries its ``offset`` within that
page's text, so an entity offset in ``text.txt`` maps back to a page and a box.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from pipeline import ocr
from pipeline import pdf as pdfmod
from pipeline.detect import open_image
from pipeline.errors import CorruptFile, MedintakeError
from pipeline.results import ExtractResult, FileKind, PageResult
from pipeline.settings import Settings

log = logging.getLogger(__name__)

PAGE_SEPARATOR = "\f"
TEXT_FILE = "text.txt"
PAGES_FILE = "pages.json"
SEARCHABLE_FILE = "searchable.pdf"

# EXIF Orientation value -> clockwise degrees that exif_transpose applies (mirrors count as turns).
_EXIF_ROTATION = {1: 0, 2: 0, 3: 180, 4: 180, 5: 90, 6: 90, 7: 270, 8: 270}


def extract_text(src: Path, kind: FileKind, out_dir: Path, settings: Settings) -> ExtractResult:
    """Extract the text of ``src`` (read-only) into ``out_dir``; see the module docstring."""
    started = time.perf_counter()
    out = _Outputs(out_dir)
    try:
        if kind.kind == "pdf":
            _extract_pdf(src, settings, out)
        else:
            _extract_images(src, settings, out)
        out.commit()
    except BaseException:
        out.discard()
        raise
    out.timings["total"] = time.perf_counter() - started
    log.info("extract finished: %d pages, %d OCR, %.2f s", len(out.results),
             sum(1 for p in out.results if p.source == "ocr"), out.timings["total"])
    return ExtractResult(
        pages=out.results,
        language=settings.ocr_languages,
        searchable_pdf=out.searchable_written,
        tool_versions=tool_versions(),
        timings={k: round(v, 4) for k, v in out.timings.items()},
    )


def tool_versions() -> dict[str, str]:
    """Versions recorded in the manifest, so a result can be traced to the engines that made it."""
    import cv2
    import pdfplumber
    import pypdfium2

    return {
        "tesseract": ocr.tesseract_version(),
        "pdfium": str(pypdfium2.version.PDFIUM_INFO),
        "pypdfium2": str(pypdfium2.version.PYPDFIUM_INFO),
        "pdfplumber": str(pdfplumber.__version__),
        "opencv": str(cv2.__version__),
    }


# --------------------------------------------------------------------------------------------
# Output files
# --------------------------------------------------------------------------------------------

@dataclass
class _Outputs:
    """Streams text.txt and pages.json page by page; keeps OCR'd one-page PDFs in a temp folder."""

    out_dir: Path
    results: list[PageResult] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    searchable_written: bool = False

    def __post_init__(self) -> None:
        self._text_tmp = self.out_dir / f".{TEXT_FILE}.part"
        self._pages_tmp = self.out_dir / f".{PAGES_FILE}.part"
        self._pdf_tmp = self.out_dir / f".{SEARCHABLE_FILE}.part"
        self._text = self._text_tmp.open("w", encoding="utf-8", newline="")
        self._pages = self._pages_tmp.open("w", encoding="utf-8")
        self._pages.write("[")
        self._offset = 0
        self._scratch = Path(tempfile.mkdtemp(prefix="medintake-pages-"))
        self.page_pdfs: dict[int, Path] = {}  # page_no -> one-page OCR PDF
        self.ocr_ran = False

    def add_time(self, name: str, seconds: float) -> None:
        self.timings[name] = self.timings.get(name, 0.0) + seconds

    def write_page(self, record: dict[str, Any], text: str, result: PageResult) -> None:
        """Append one page's text and record (text_offset filled in here)."""
        if self.results:
            self._text.write(PAGE_SEPARATOR)
            self._offset += len(PAGE_SEPARATOR)
        record["text_offset"] = self._offset
        self._text.write(text)
        self._offset += len(text)
        self._pages.write(("," if self.results else "") + "\n" + json.dumps(record, ensure_ascii=False))
        self.results.append(result)

    def keep_page_pdf(self, page_no: int, data: bytes) -> None:
        path = self._scratch / f"{page_no:06d}.pdf"
        path.write_bytes(data)
        self.page_pdfs[page_no] = path
        self.ocr_ran = True

    def write_searchable(self, original: Any | None, page_count: int) -> None:
        """Assemble searchable.pdf: OCR'd pages from their one-page PDFs, others copied as-is."""
        t0 = time.perf_counter()
        writer = pdfmod.SearchablePdfWriter()
        try:
            for page_no in range(1, page_count + 1):
                path = self.page_pdfs.get(page_no)
                if path is not None:
                    writer.add_pdf_page(path.read_bytes())
                elif original is not None:
                    writer.add_original_page(original, page_no - 1)
            writer.save(self._pdf_tmp)
        finally:
            writer.close()
        self.searchable_written = True
        self.add_time("searchable_pdf", time.perf_counter() - t0)

    def commit(self) -> None:
        """Close the streams and move every output into place (atomic per file)."""
        self._pages.write("\n]\n")
        self._text.close()
        self._pages.close()
        os.replace(self._text_tmp, self.out_dir / TEXT_FILE)
        os.replace(self._pages_tmp, self.out_dir / PAGES_FILE)
        if self.searchable_written:
            os.replace(self._pdf_tmp, self.out_dir / SEARCHABLE_FILE)
        else:
            (self.out_dir / SEARCHABLE_FILE).unlink(missing_ok=True)  # stale from an earlier run
        shutil.rmtree(self._scratch, ignore_errors=True)

    def discard(self) -> None:
        """Remove partial outputs; earlier complete outputs (if any) stay untouched."""
        for fh in (self._text, self._pages):
            if not fh.closed:
                fh.close()
        for path in (self._text_tmp, self._pages_tmp, self._pdf_tmp):
            path.unlink(missing_ok=True)
        shutil.rmtree(self._scratch, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# PDFs
# --------------------------------------------------------------------------------------------

def _extract_pdf(src: Path, settings: Settings, out: _Outputs) -> None:
    doc = pdfmod.open_pdfium(src)
    try:
        count = len(doc)
        if count == 0:
            raise CorruptFile("the PDF has no pages")
        with pdfmod.open_plumber(src) as plumber:
            for index, layer in enumerate(_text_layers(plumber, count, out)):
                if layer is not None:
                    _write_text_layer_page(index + 1, layer, out)
                else:
                    _ocr_pdf_page(doc, index, settings, out)
        if out.ocr_ran:
            out.write_searchable(doc, count)
    finally:
        doc.close()


def _text_layers(plumber: Any, count: int, out: _Outputs) -> Iterator[pdfmod.TextLayerPage | None]:
    """Each page's usable text layer, or None when the page must be OCR'd."""
    try:
        pages = plumber.pages
    except MedintakeError:
        raise
    except Exception:
        raise CorruptFile("the PDF's page tree cannot be read") from None
    if len(pages) != count:
        raise CorruptFile("the PDF's page tree is inconsistent")
    for page in pages:
        t0 = time.perf_counter()
        try:
            layer = pdfmod.read_text_layer(page)
        finally:
            page.close()
        out.add_time("text_layer", time.perf_counter() - t0)
        yield layer if pdfmod.is_usable_text(layer.text) else None


def _write_text_layer_page(page_no: int, layer: pdfmod.TextLayerPage, out: _Outputs) -> None:
    record = {
        "page_no": page_no,
        "source": "text-layer",
        "units": "pt",
        "width": round(layer.width, 2),
        "height": round(layer.height, 2),
        "rotation": layer.rotation,
        "dpi": None,
        "text_offset": 0,
        "chars": len(layer.text),
        "mean_confidence": None,
        "lines": layer.lines,
        "words": layer.words,
    }
    result = PageResult(page_no=page_no, source="text-layer", width=layer.width, height=layer.height,
                        rotation=layer.rotation, dpi=None, chars=len(layer.text), words=len(layer.words))
    out.write_page(record, layer.text, result)


def _ocr_pdf_page(doc: Any, index: int, settings: Settings, out: _Outputs) -> None:
    t0 = time.perf_counter()
    width_pt, height_pt = pdfmod.page_size_points(doc, index)
    image = pdfmod.render_page(doc, index, settings.ocr_dpi)
    out.add_time("render", time.perf_counter() - t0)
    # Rendered pages are flat by construction: no photo detection.
    page = ocr.ocr_image(image, settings, dpi=settings.ocr_dpi, photo_check=False)
    image.close()
    _write_ocr_page(index + 1, page, out, page_size_pt=(width_pt, height_pt))


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------

def _extract_images(src: Path, settings: Settings, out: _Outputs) -> None:
    img = open_image(src, settings)
    try:
        frames = (getattr(img, "n_frames", 1) or 1) if img.format == "TIFF" else 1
        for index in range(frames):
            t0 = time.perf_counter()
            frame, exif_rotation, dpi = _load_frame(img, index)
            out.add_time("decode", time.perf_counter() - t0)
            page = ocr.ocr_image(frame, settings, dpi=dpi, photo_check=True)
            frame.close()
            page.rotation = (page.rotation + exif_rotation) % 360
            _write_ocr_page(index + 1, page, out, page_size_pt=None)
        out.write_searchable(None, frames)
    finally:
        img.close()


def _load_frame(img: Any, index: int) -> tuple[Any, int, float | None]:
    """Frame ``index`` decoded and turned upright by its EXIF Orientation, with its stated dpi."""
    from PIL import ImageOps

    try:
        img.seek(index)
        orientation = 1
        try:
            orientation = int(img.getexif().get(0x0112, 1) or 1)
        except Exception:  # a damaged EXIF block must not sink the page
            orientation = 1
        frame = ImageOps.exif_transpose(img)
        frame.load()
    except EOFError:
        raise CorruptFile("an image frame is missing") from None
    except (OSError, ValueError, SyntaxError):
        raise CorruptFile("the image cannot be decoded") from None
    dpi = img.info.get("dpi")
    x_dpi = float(dpi[0]) if isinstance(dpi, tuple) and dpi and dpi[0] else None
    return frame, _EXIF_ROTATION.get(orientation, 0), x_dpi


# --------------------------------------------------------------------------------------------
# OCR'd pages (PDF or image)
# --------------------------------------------------------------------------------------------

def _write_ocr_page(page_no: int, page: ocr.OcrPage, out: _Outputs,
                    page_size_pt: tuple[float, float] | None) -> None:
    """Record one OCR'd page and keep its one-page searchable PDF."""
    for name, seconds in page.timings.items():
        out.add_time(name, seconds)
    rec = page.recognition
    t0 = time.perf_counter()
    from_pdf = page_size_pt is not None
    if page_size_pt is None:
        page_size_pt = (page.width * 72.0 / page.dpi, page.height * 72.0 / page.dpi)
    out.keep_page_pdf(page_no, pdfmod.build_ocr_page_pdf(ocr.encode_jpeg(page.gray), rec.pdf, *page_size_pt))
    out.add_time("searchable_pdf", time.perf_counter() - t0)
    source = "ocr" if rec.words else "empty"
    record = {
        "page_no": page_no,
        "source": source,
        "units": "px",
        "width": page.width,
        "height": page.height,
        "rotation": page.rotation,
        "skew": page.skew,
        "scale": round(page.scale, 4),
        "perspective_corrected": page.perspective,
        "dpi": page.dpi,
        "page_width_pt": round(page_size_pt[0], 2),
        "page_height_pt": round(page_size_pt[1], 2),
        "text_offset": 0,
        "chars": len(rec.text),
        "mean_confidence": rec.mean_confidence,
        "lines": rec.lines,
        "words": rec.words,
    }
    # PageResult speaks points for PDF pages and pixels for images (see pipeline.results).
    width, height = (page_size_pt if from_pdf else (page.width, page.height))
    result = PageResult(page_no=page_no, source=source, width=width, height=height,
                        rotation=page.rotation, dpi=page.dpi, chars=len(rec.text), words=len(rec.words),
                        mean_confidence=rec.mean_confidence)
    out.write_page(record, rec.text, result)
