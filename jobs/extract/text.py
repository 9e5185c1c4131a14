"""The text/OCR stage: one upload in, ``text.txt`` + ``pages.json`` (+ ``searchable.pdf``) out.

The job runner calls :func:`extract_text` after ``detect.identify``/``detect.validate``. Digital
PDF pages take their text from the text layer and never reach tesseract; pages without a usable
text layer and every image frame are OCR'd (see :mod:`jobs.extract.ocr`). Pages are handled one by one
and their results streamed to disk, so memory does not grow with the page count. Outputs are written
under temporary names and renamed at the end: a failed or repeated run never leaves a mix.

Text layout of ``text.txt``: pages joined by a form feed ("\\f"); each page's ``text_offset`` in
``pages.json`` is where its text starts, and every line/word carries its ``offset`` within that
page's text, so an entity offset in ``text.txt`` maps back to a page and a box.
"""
from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from jobs.extract import ocr, tesseract
from jobs.extract import pdf as pdfmod
from jobs.extract.languages import first_pass
from jobs.extract.results import ExtractResult, PageResult
from jobs.identify import DECODE_ERRORS, FileKind, open_image, open_pdfium
from pipeline.errors import CorruptFile, MedintakeError, ToolFailed
from pipeline.settings import Settings

log = logging.getLogger(__name__)

PAGE_SEPARATOR = "\f"
TEXT_FILE = "text.txt"
PAGES_FILE = "pages.json"
SEARCHABLE_FILE = "searchable.pdf"

#: pages.json ``source`` of a page that could not be read (its ``error`` says why); its text is empty.
ERROR_SOURCE = "error"

# EXIF Orientation value -> clockwise degrees that exif_transpose applies (mirrors count as turns).
_EXIF_ROTATION = {1: 0, 2: 0, 3: 180, 4: 180, 5: 90, 6: 90, 7: 270, 8: 270}


def extract_text(src: Path, kind: FileKind, out_dir: Path, settings: Settings,
                 pages: tuple[int, int] | None = None) -> ExtractResult:
    """Extract the text of ``src`` (read-only) into ``out_dir``; see the module docstring.

    ``pages`` (1-based, inclusive; PDFs only) limits the work to one page range of a long
    document (jobs/extract/ranges.py): page numbers stay the document's, text offsets the range's.
    """
    started = time.perf_counter()
    out = _Outputs(out_dir)
    try:
        if kind.kind == "pdf":
            _extract_pdf(src, settings, out, pages)
        elif kind.kind == "dicom":
            _extract_dicom(src, settings, out)
        elif kind.kind == "document":
            _extract_document(src, kind, settings, out)
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
        language=_document_languages(out.results, settings),
        searchable_pdf=out.searchable_written,
        tool_versions=tool_versions(settings),
        timings={k: round(v, 4) for k, v in out.timings.items()},
    )


def _document_languages(pages: list[PageResult], settings: Settings) -> str:
    """The languages the OCR'd pages were read with ('+'-joined, first seen first); without OCR
    pages, the first-pass set (ocr_languages=auto chooses per page: jobs/extract/languages.py)."""
    seen: list[str] = []
    for page in pages:
        for code in (page.languages or "").split("+"):
            if code and code not in seen:
                seen.append(code)
    return "+".join(seen) or first_pass(settings)


def tool_versions(settings: Settings) -> dict[str, str]:
    """Versions recorded in the manifest, so a result can be traced to the engines that made it."""
    from importlib.metadata import version

    import cv2
    import pypdfium2

    return {
        "tesseract": tesseract.tesseract_version(settings.tesseract_cmd),
        "pdfium": str(pypdfium2.version.PDFIUM_INFO),
        "pypdfium2": str(pypdfium2.version.PYPDFIUM_INFO),
        # its installed version, without importing it: pdfplumber + pdfminer + charset_normalizer cost
        # ~0.06-0.1 CPU s per worker process, paid only for this string when the text engine is pdfium
        "pdfplumber": version("pdfplumber"),
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
        self.page_pdfs: dict[int, Path] = {}  # page_no -> one-page OCR PDF (on disk, never in memory)
        self.ocr_ran = False
        self.failed: list[dict[str, Any]] = []  # {"page_no", "error", "message"} of pages that could not be read
        self.first_error: MedintakeError | None = None

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

    def write_searchable(self, original: Path | None, page_nos: range) -> None:
        """Assemble searchable.pdf: OCR'd pages from their one-page PDFs, others copied as-is.

        With qpdf the pages are copied file to file (:func:`concatenate_pdfs`), so memory does not
        grow with the page count; pdfium's writer, the fallback, holds every page's compressed
        content until it saves (about 0.1-0.3 MB a scanned page).
        """
        t0 = time.perf_counter()
        parts: list[tuple[Path, int, int]] = []
        for page_no in page_nos:
            path = self.page_pdfs.get(page_no)
            if path is not None:
                parts.append((path, 1, 1))
            elif original is not None:
                if parts and parts[-1][0] == original and parts[-1][2] == page_no - 1:
                    parts[-1] = (original, parts[-1][1], page_no)
                else:
                    parts.append((original, page_no, page_no))
            else:  # an image page that could not be read: its place kept, blank
                blank = self._scratch / f"{page_no:06d}.pdf"
                blank.write_bytes(_blank_page_pdf())
                parts.append((blank, 1, 1))
        concatenate_pdfs(parts, self._pdf_tmp)
        self.searchable_written = True
        self.add_time("searchable_pdf", time.perf_counter() - t0)

    def page_failed(self, page_no: int, error: MedintakeError, width: float = 0.0, height: float = 0.0) -> None:
        """Record a page that could not be read: an empty page whose record says why."""
        code = PAGE_TIMEOUT if isinstance(error, PageTimeout) else getattr(error, "reason_code", None) or "page_failed"
        self.failed.append({"page_no": page_no, "error": code, "message": error.message})
        self.first_error = self.first_error or error
        record = {"page_no": page_no, "source": ERROR_SOURCE, "error": code, "message": error.message,
                  "units": "pt", "width": round(width, 2), "height": round(height, 2), "rotation": 0, "dpi": None,
                  "text_offset": 0, "chars": 0, "mean_confidence": None, "lines": [], "words": []}
        self.write_page(record, "", PageResult(page_no=page_no, source=ERROR_SOURCE, width=width, height=height))
        if code != PAGE_TIMEOUT:  # a damaged page cannot be copied: searchable.pdf keeps its place blank
            path = self._scratch / f"{page_no:06d}.pdf"
            path.write_bytes(_blank_page_pdf())
            self.page_pdfs[page_no] = path
        log.warning("page %d not read: %s", page_no, code)

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
# OCR jobs: one page each, run here or in a pool of processes
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OcrJob:
    """Everything a process needs to OCR one page on its own (picklable: paths, not handles)."""

    src: str
    kind: str  # "pdf" | "image" | "dicom"
    index: int  # 0-based page or frame
    settings: Settings


@dataclass
class OcrOutcome:
    """One OCR'd page as plain data: its pages.json record, its text and its one-page PDF."""

    record: dict[str, Any]
    text: str
    page_pdf: bytes
    result: PageResult
    timings: dict[str, float]
    error: MedintakeError | None = None  # the page could not be read (timeout, damage): nothing else is set


#: pages.json ``error`` of a page that exceeded ``page_timeout_seconds``.
PAGE_TIMEOUT = "page_timeout"


class PageTimeout(ToolFailed):
    """One page took longer than ``page_timeout_seconds``: that page fails, not the document."""


def ocr_page_guarded(job: OcrJob) -> OcrOutcome:
    """:func:`ocr_page` within the page's time limit; a PDF page that times out or is damaged
    comes back as an error outcome (the document goes on without it, pages.json says why)."""
    limit = float(job.settings.page_timeout_seconds or 0)
    try:
        if limit > 0:
            # tesseract is killed by its own timeout within the page's budget; the alarm covers
            # rendering and preprocessing (and a tesseract call that outlives it, killed below).
            settings = job.settings.replace(ocr_timeout=min(job.settings.ocr_timeout, limit))
            with _deadline(limit + 1.0):
                return ocr_page(OcrJob(job.src, job.kind, job.index, settings))
        return ocr_page(job)
    except PageTimeout as exc:
        error: MedintakeError = exc
    except ToolFailed as exc:
        if "timed out" not in exc.message:
            raise
        error = PageTimeout(f"the page took longer than {limit:g} s" if limit > 0 else exc.message)
    except CorruptFile as exc:
        if job.kind != "pdf":
            raise
        error = exc
    return OcrOutcome({}, "", b"", PageResult(page_no=job.index + 1, source=ERROR_SOURCE, width=0.0, height=0.0),
                      {}, error=error)


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Raise PageTimeout in this (main) thread after ``seconds``; elsewhere, no limit but tesseract's."""
    if (threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer")
            or signal.getitimer(signal.ITIMER_REAL)[0] > 0):  # someone else's alarm is set: not clobbered
        yield
        return

    def expired(*_: Any) -> None:
        _kill_tesseract_children()
        raise PageTimeout(f"the page took longer than {seconds - 1.0:g} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _kill_tesseract_children() -> None:
    """A tesseract this process started must not outlive the page it was reading (Linux /proc)."""
    me = os.getpid()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            raw = stat.read_text()
            name, fields = raw.split("(", 1)[1].rsplit(")", 1)[0], raw.rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == me and name.startswith("tesseract"):
            with contextlib.suppress(OSError):
                os.kill(int(stat.parent.name), signal.SIGKILL)
                os.waitpid(int(stat.parent.name), 0)


def ocr_page(job: OcrJob) -> OcrOutcome:
    """Render or decode one page, OCR it and build its searchable page (runs in any process)."""
    settings = job.settings
    if job.kind == "pdf":
        t0 = time.perf_counter()
        doc = open_pdfium(Path(job.src))
        try:
            size_pt = pdfmod.page_size_points(doc, job.index)
            dpi = pdfmod.safe_dpi(size_pt, settings.ocr_dpi, settings.max_image_pixels)
            image = pdfmod.render_page(doc, job.index, dpi)
        finally:
            doc.close()
        render = time.perf_counter() - t0
        # Rendered pages are flat by construction: no photo detection.
        page = ocr.ocr_image(image, settings, dpi=dpi, photo_check=False)
        page.timings["render"] = render
        image.close()
        return _ocr_outcome(job.index + 1, page, size_pt)
    t0 = time.perf_counter()
    if job.kind == "dicom":
        from jobs import dicom

        # No dpi: Pixel Spacing is a header value, and pages.json holds pixel-derived data only.
        frame, exif_rotation, dpi = dicom.frame_image(Path(job.src), job.index, settings), 0, None
    else:
        img = open_image(Path(job.src), settings)
        try:
            frame, exif_rotation, dpi = _load_frame(img, job.index)
        finally:
            img.close()
    decode = time.perf_counter() - t0
    page = ocr.ocr_image(frame, settings, dpi=dpi, photo_check=True)
    frame.close()
    page.timings["decode"] = decode
    page.rotation = (page.rotation + exif_rotation) % 360
    return _ocr_outcome(job.index + 1, page, None)


class _PageRunner:
    """Runs OCR jobs (inline or in worker processes) and writes every page in page order.

    At most ``2 x workers`` OCR'd pages are in flight and at most ``_MAX_WAITING`` finished pages
    wait behind them, so memory stays bounded by the worker count, not by the page count.
    ``ocr_page_workers`` = 1 (the default, and when Settings has no such field) keeps everything
    in this process: the local compute environment already runs one worker per core.
    """

    def __init__(self, settings: Settings, out: _Outputs) -> None:
        self.out = out
        self.workers = max(1, int(settings.ocr_page_workers or 1))
        self._pending: collections.deque[tuple[str, Any]] = collections.deque()
        self._pool: Any = None

    def __enter__(self) -> "_PageRunner":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    _MAX_WAITING = 64

    def add_text_page(self, page_no: int, layer: pdfmod.TextLayerPage) -> None:
        self._pending.append(("text", (page_no, layer)))
        self._flush(block=len(self._pending) >= self._MAX_WAITING)

    def add_ocr_job(self, job: OcrJob, pages_left: int) -> None:
        if self.workers == 1 or pages_left < 1:
            self._pending.append(("done", ocr_page_guarded(job)))
        else:
            self._pending.append(("future", self._executor().submit(ocr_page_guarded, job)))
        in_flight = sum(1 for k, _ in self._pending if k == "future")
        self._flush(block=in_flight >= 2 * self.workers or len(self._pending) >= self._MAX_WAITING)

    def finish(self) -> None:
        self._flush(block=True, everything=True)

    def _executor(self) -> Any:
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn: PDF engines and OpenCV are not fork-safe once initialised in the parent.
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def _flush(self, *, block: bool, everything: bool = False) -> None:
        while self._pending:
            kind, item = self._pending[0]
            if kind == "future":
                if not (block or item.done()):
                    return
                item = item.result()  # re-raises the page's error here, in page order
                block = everything
            self._pending.popleft()
            if kind == "text":
                _write_text_layer_page(item[0], item[1], self.out)
            elif kind == "error":
                self.out.page_failed(item[0], item[1])
            else:
                _write_ocr_outcome(item, self.out)

    def add_failed_page(self, page_no: int, error: MedintakeError) -> None:
        self._pending.append(("error", (page_no, error)))
        self._flush(block=len(self._pending) >= self._MAX_WAITING)


# --------------------------------------------------------------------------------------------
# PDFs
# --------------------------------------------------------------------------------------------

#: Text-layer engine; Settings may override it with a ``text_engine`` field ("pdfium" | "pdfplumber").
#: pdfium is the default because it measured ~10x faster than pdfplumber on the pdf-text corpus
#: and keeps multi-column pages in column order (pdfplumber merges the columns line by line).
DEFAULT_TEXT_ENGINE = "pdfium"


def _extract_pdf(src: Path, settings: Settings, out: _Outputs, pages: tuple[int, int] | None = None) -> None:
    """Every page (or pages ``first``-``last``) of a PDF, in order; a damaged or timed-out page is
    recorded as failed and the others go on, unless no page at all could be read."""
    doc = open_pdfium(src)
    try:
        count = len(doc)
        if count == 0:
            raise CorruptFile("the PDF has no pages")
        first, last = pages or (1, count)
        if not 1 <= first <= last <= count:
            raise CorruptFile("the PDF has fewer pages than the range to read")
        indices = range(first - 1, last)
        engine = str(settings.text_engine or DEFAULT_TEXT_ENGINE)
        with contextlib.ExitStack() as stack:
            runner = stack.enter_context(_PageRunner(settings, out))
            if engine == "pdfplumber":
                layers = _plumber_layers(stack.enter_context(pdfmod.open_plumber(src)), count, out, indices)
            else:
                layers = _pdfium_layers(doc, indices, out)
            for index, layer in zip(indices, layers):
                if isinstance(layer, MedintakeError):
                    runner.add_failed_page(index + 1, layer)
                elif layer is not None:
                    runner.add_text_page(index + 1, layer)
                else:
                    runner.add_ocr_job(OcrJob(str(src), "pdf", index, settings), pages_left=last - index - 1)
            runner.finish()
        if pages is None and out.first_error is not None and len(out.failed) == len(out.results):
            raise out.first_error  # nothing readable: the document's error (a range: the merge decides)
        if out.ocr_ran:
            out.write_searchable(src, range(first, last + 1))
    finally:
        doc.close()


def _usable(layer: pdfmod.TextLayerPage) -> pdfmod.TextLayerPage | None:
    return layer if pdfmod.is_usable_text(layer.text) else None


def _pdfium_layers(doc: Any, indices: range, out: _Outputs) -> Iterator[pdfmod.TextLayerPage | MedintakeError | None]:
    """Each page's usable text layer (pdfium), None when the page must be OCR'd, or the error of a
    page that cannot be loaded."""
    import pypdfium2 as pdfium

    for index in indices:
        t0 = time.perf_counter()
        try:
            page = doc[index]
        except pdfium.PdfiumError:
            yield CorruptFile("a PDF page cannot be loaded")
            continue
        try:
            layer = pdfmod.read_text_layer_pdfium(page)
        finally:
            page.close()
        out.add_time("text_layer", time.perf_counter() - t0)
        yield _usable(layer)


def _plumber_layers(plumber: Any, count: int, out: _Outputs, indices: range) -> Iterator[pdfmod.TextLayerPage | None]:
    """Each page's usable text layer (pdfplumber), or None when the page must be OCR'd."""
    try:
        pages = plumber.pages
    except MedintakeError:
        raise
    except Exception:
        raise CorruptFile("the PDF's page tree cannot be read") from None
    if len(pages) != count:
        raise CorruptFile("the PDF's page tree is inconsistent")
    for page in (pages[i] for i in indices):
        t0 = time.perf_counter()
        try:
            layer = pdfmod.read_text_layer(page)
        finally:
            page.close()
        out.add_time("text_layer", time.perf_counter() - t0)
        yield _usable(layer)


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


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------

def _extract_images(src: Path, settings: Settings, out: _Outputs) -> None:
    img = open_image(src, settings)
    try:
        frames = (getattr(img, "n_frames", 1) or 1) if img.format == "TIFF" else 1
    except DECODE_ERRORS:
        raise CorruptFile("the image's frames cannot be counted") from None
    finally:
        img.close()
    with _PageRunner(settings, out) as runner:
        for index in range(frames):
            runner.add_ocr_job(OcrJob(str(src), "image", index, settings), pages_left=frames - index - 1)
        runner.finish()
    if out.first_error is not None and len(out.failed) == len(out.results):
        raise out.first_error  # no frame read within its time limit: the document's error
    out.write_searchable(None, range(1, frames + 1))


# --------------------------------------------------------------------------------------------
# DICOM: frames are OCR'd as image pages; an Encapsulated PDF is processed as the PDF it carries
# --------------------------------------------------------------------------------------------

def _extract_dicom(src: Path, settings: Settings, out: _Outputs) -> None:
    from jobs import dicom

    info = dicom.inspect(src, settings)
    if info.content == "pdf":
        with tempfile.TemporaryDirectory(prefix="medintake-dcmpdf-") as tmp:
            _extract_pdf(dicom.write_pdf(src, Path(tmp) / "document.pdf"), settings, out)
        return
    with _PageRunner(settings, out) as runner:
        for index in range(info.frames):
            runner.add_ocr_job(OcrJob(str(src), "dicom", index, settings), pages_left=info.frames - index - 1)
        runner.finish()
    if out.first_error is not None and len(out.failed) == len(out.results):
        raise out.first_error
    out.write_searchable(None, range(1, info.frames + 1))


# --------------------------------------------------------------------------------------------
# Word-processor documents and plain text: the text as it is, laid out on pages (source "text")
# --------------------------------------------------------------------------------------------

def _extract_document(src: Path, kind: FileKind, settings: Settings, out: _Outputs) -> None:
    from jobs import office

    t0 = time.perf_counter()
    _, pages = office.document_pages(src, kind.format, settings)
    out.add_time("text", time.perf_counter() - t0)
    for page_no, page in enumerate(pages, start=1):
        record = {
            "page_no": page_no,
            "source": "text",
            "units": "pt",
            "width": office.PAGE_WIDTH,
            "height": office.PAGE_HEIGHT,
            "rotation": 0,
            "dpi": None,
            "text_offset": 0,
            "chars": len(page.text),
            "mean_confidence": None,
            "lines": page.lines,
            "words": page.words,
        }
        result = PageResult(page_no=page_no, source="text", width=office.PAGE_WIDTH, height=office.PAGE_HEIGHT,
                            rotation=0, dpi=None, chars=len(page.text), words=len(page.words))
        out.write_page(record, page.text, result)


def _load_frame(img: Any, index: int) -> tuple[Any, int, float | None]:
    """Frame ``index`` decoded and turned upright by its EXIF Orientation, with its stated dpi."""
    from PIL import ImageOps

    try:
        img.seek(index)
        if img.mode not in ("P", "PA"):
            # Pillow keeps a palette frame's palette across a TIFF seek and then fails to load
            # a later F or L frame ("unrecognized image mode"); such a page has no palette.
            img.palette = None
        orientation = 1
        try:
            orientation = int(img.getexif().get(0x0112, 1) or 1)
        except Exception:  # a damaged EXIF block must not sink the page
            orientation = 1
        if img.format == "JPEG" and img.mode == "RGB":
            # OCR reads grey: libjpeg then outputs luminance straight from the stream, skipping
            # the colour conversion (an 8.7 MP receipt: 36 -> 11 ms CPU; mean difference 0.005 grey
            # levels from Pillow's RGB -> L).
            img.draft("L", img.size)
        frame = ImageOps.exif_transpose(img)
        frame.load()
    except EOFError:
        raise CorruptFile("an image frame is missing") from None
    except DECODE_ERRORS:
        raise CorruptFile("the image cannot be decoded") from None
    dpi = img.info.get("dpi")
    x_dpi = float(dpi[0]) if isinstance(dpi, tuple) and dpi and dpi[0] else None
    return frame, _EXIF_ROTATION.get(orientation, 0), x_dpi


# --------------------------------------------------------------------------------------------
# OCR'd pages (PDF or image)
# --------------------------------------------------------------------------------------------

def _ocr_outcome(page_no: int, page: ocr.OcrPage, page_size_pt: tuple[float, float] | None) -> OcrOutcome:
    """Plain-data record of one OCR'd page, with its one-page searchable PDF."""
    rec = page.recognition
    timings = dict(page.timings)
    t0 = time.perf_counter()
    from_pdf = page_size_pt is not None
    if page_size_pt is None:
        page_size_pt = (page.width * 72.0 / page.dpi, page.height * 72.0 / page.dpi)
    page_pdf = pdfmod.build_ocr_page_pdf(ocr.encode_jpeg(page.gray), rec.pdf, *page_size_pt)
    timings["searchable_pdf"] = time.perf_counter() - t0
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
        "languages": rec.languages,
        "lines": rec.lines,
        "words": rec.words,
    }
    # PageResult speaks points for PDF pages and pixels for images (see jobs.extract.results).
    width, height = (page_size_pt if from_pdf else (page.width, page.height))
    result = PageResult(page_no=page_no, source=source, width=width, height=height,
                        rotation=page.rotation, dpi=page.dpi, chars=len(rec.text), words=len(rec.words),
                        mean_confidence=rec.mean_confidence, languages=rec.languages)
    return OcrOutcome(record, rec.text, page_pdf, result, timings)


def _write_ocr_outcome(outcome: OcrOutcome, out: _Outputs) -> None:
    if outcome.error is not None:
        out.page_failed(outcome.result.page_no, outcome.error)
        return
    for name, seconds in outcome.timings.items():
        out.add_time(name, seconds)
    out.keep_page_pdf(outcome.result.page_no, outcome.page_pdf)
    out.write_page(outcome.record, outcome.text, outcome.result)


# --------------------------------------------------------------------------------------------
# PDF assembly without holding the pages in memory
# --------------------------------------------------------------------------------------------

def concatenate_pdfs(parts: list[tuple[Path, int, int]], dest: Path) -> None:
    """Write ``dest`` from pages ``first``-``last`` (1-based) of each file, in order.

    qpdf copies page objects file to file, reading each stream when it writes it: its memory is
    the object tables, not the pages (measured in bench/README-long.md). Without qpdf, or if it
    refuses an original it cannot repair, pdfium's writer does it in memory.
    """
    qpdf = shutil.which("qpdf")
    if qpdf and parts:
        args = [qpdf, "--empty", "--no-warn", "--pages"]
        for path, first, last in parts:
            args += [str(path), f"{first}-{last}" if last > first else str(first)]
        args += ["--", str(dest)]
        done = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              check=False)
        if done.returncode in (0, 3):  # 3: warnings (a repaired original), output written
            return
        log.warning("qpdf could not assemble the searchable PDF (exit %d); pdfium does", done.returncode)
    uses = collections.Counter(path for path, _, _ in parts)
    writer = pdfmod.SearchablePdfWriter()
    opened: dict[Path, Any] = {}
    try:
        for path, first, last in parts:
            doc = opened.get(path) or opened.setdefault(path, open_pdfium(path))
            for page_no in range(first, last + 1):
                writer.add_original_page(doc, page_no - 1)
            uses[path] -= 1
            if not uses[path]:  # a one-page OCR file: closed at once, not kept open with 499 others
                opened.pop(path).close()
        writer.save(dest)
    finally:
        writer.close()
        for doc in opened.values():
            doc.close()


def _blank_page_pdf(width_pt: float = 612.0, height_pt: float = 792.0) -> bytes:
    """One empty Letter page: holds a damaged page's place in searchable.pdf."""
    import io

    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument.new()
    try:
        doc.new_page(width_pt, height_pt).close()
        buf = io.BytesIO()
        doc.save(buf)
        return buf.getvalue()
    finally:
        doc.close()
