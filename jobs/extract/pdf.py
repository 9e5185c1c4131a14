"""PDF access: the text layer (pdfium by default, pdfplumber on request), page rendering and
searchable-PDF assembly (pypdfium2).

Pages are visited one at a time and closed after use so that memory does not grow with the page
count. Every engine error while reading is turned into ``CorruptFile`` (or ``EncryptedPdf``) with a
message that names no file and quotes no content.
"""
from __future__ import annotations

import contextlib
import io
import logging
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pypdfium2 as pdfium
from PIL import Image

from pipeline.errors import CorruptFile

log = logging.getLogger(__name__)

# pdfminer logs raw content streams (the document's text) at DEBUG level: never let it, whatever
# level the worker runs at, since logs must not carry PHI.
logging.getLogger("pdfminer").setLevel(logging.WARNING)

# A text layer below these figures is treated as absent and the page is OCR'd.
_MIN_ALNUM_CHARS = 3
_MIN_GOOD_SHARE = 0.5
_CID_RE = re.compile(r"\(cid:\d+\)")


@dataclass
class TextLayerPage:
    """Text of one digital page, in reading order, with line and word boxes in PDF points."""

    text: str
    lines: list[dict[str, Any]]
    words: list[dict[str, Any]]
    width: float
    height: float
    rotation: int


@contextlib.contextmanager
def open_plumber(path: Path) -> Iterator[Any]:
    """Open with pdfplumber (pdfminer underneath); parse errors become CorruptFile."""
    import pdfplumber

    try:
        pdf = pdfplumber.open(str(path))
    except Exception:  # pdfminer raises many unrelated types for damaged files
        raise CorruptFile("the PDF cannot be parsed") from None
    try:
        yield pdf
    finally:
        pdf.close()


# --------------------------------------------------------------------------------------------
# Text layer
# --------------------------------------------------------------------------------------------

def is_usable_text(text: str) -> bool:
    """Whether a text layer is worth keeping: some letters/digits, mostly real characters.

    Garbage layers (unmapped glyphs shown as ``(cid:N)``, private-use or replacement characters,
    control characters) are not: such pages are OCR'd instead.
    """
    cleaned = _CID_RE.sub("\ufffd", text)
    visible = [ch for ch in cleaned if not ch.isspace()]
    if sum(ch.isalnum() for ch in visible) < _MIN_ALNUM_CHARS:
        return False
    good = sum(1 for ch in visible if unicodedata.category(ch)[0] in "LNPS" and ch != "\ufffd"
               and unicodedata.category(ch) != "Co")
    return good / len(visible) >= _MIN_GOOD_SHARE


def read_text_layer(page: Any) -> TextLayerPage:
    """Lines and words of one pdfplumber page in reading order; page text built from the lines.

    Building the text from the lines (joined by "\\n") gives every line and word an exact
    ``offset`` into the page text, which is what maps entities back to boxes.
    """
    try:
        raw_lines = page.extract_text_lines(strip=True, return_chars=False)
        raw_words = page.extract_words(keep_blank_chars=False, use_text_flow=False)
    except Exception:
        raise CorruptFile("a PDF page cannot be read") from None
    lines: list[dict[str, Any]] = []
    parts: list[str] = []
    pos = 0
    for ln in raw_lines:
        text = ln["text"]
        if not text.strip():
            continue
        if parts:
            parts.append("\n")
            pos += 1
        lines.append({"text": text, "bbox": _box(ln), "confidence": 100.0, "offset": pos})
        parts.append(text)
        pos += len(text)
    page_text = "".join(parts)
    words = _place_words(raw_words, page_text)
    rotation = int(getattr(page, "rotation", 0) or 0) % 360
    return TextLayerPage(page_text, lines, words, float(page.width), float(page.height), rotation)


def read_text_layer_pdfium(page: pdfium.PdfPage) -> TextLayerPage:
    """The same record as :func:`read_text_layer`, from pdfium's text API (~40x faster).

    pdfium keeps the content stream's order and marks its own line breaks; each character is read
    with its box, so the page text, the words and their offsets are built in one pass. Boxes are
    converted to pdfplumber's convention (points from the crop box's top-left corner).

    Hot loop of a born-digital page (thousands of characters): the code points are read in one
    sweep, the ctypes functions are bound once, and lines are kept as parallel lists of
    characters and boxes (no tuple per character); a box is asked for only where a word is.
    """
    import ctypes

    import pypdfium2.raw as raw

    try:
        textpage = page.get_textpage()
    except pdfium.PdfiumError:
        raise CorruptFile("a PDF page cannot be read") from None
    try:
        left, bottom, right, top = page.get_cropbox()
        tp = textpage.raw
        n = raw.FPDFText_CountChars(tp)
        get_unicode, get_box = raw.FPDFText_GetUnicode, raw.FPDFText_GetCharBox
        codes = [get_unicode(tp, k) for k in range(n)]
        l, r, b, t = (ctypes.c_double() for _ in range(4))
        lines: list[tuple[list[str], list[tuple[float, float, float, float] | None]]] = []
        chars: list[str] = []
        boxes: list[tuple[float, float, float, float] | None] = []
        i = 0
        while i < n:
            cp = codes[i]
            if 0xD800 <= cp < 0xDC00 and i + 1 < n:  # surrogate pair: one character, two indices
                cp = 0x10000 + ((cp - 0xD800) << 10) + (codes[i + 1] - 0xDC00)
                i += 1
            idx = i
            i += 1
            if cp == 0x0A or cp == 0x0D:
                if cp == 0x0A or chars:
                    lines.append((chars, boxes))
                    chars, boxes = [], []
                continue
            ch = "-" if cp == 0x02 else chr(cp) if cp >= 0x20 else " "
            chars.append(ch)
            if not ch.isspace() and get_box(tp, idx, l, r, b, t):
                boxes.append((l.value - left, top - t.value, r.value - left, top - b.value))
            else:
                boxes.append(None)
        lines.append((chars, boxes))
    finally:
        textpage.close()
    return _assemble_layer(lines, right - left, top - bottom, page.get_rotation())


_WORD = re.compile(r"\S+")  # \s is str.isspace() for str patterns (both are Py_UNICODE_ISSPACE)


def _assemble_layer(char_lines: list[tuple[list[str], list[tuple[float, float, float, float] | None]]],
                    width: float, height: float, rotation: int) -> TextLayerPage:
    """Page text, lines and words (with offsets) from lines of characters and their boxes (None: no box)."""
    parts: list[str] = []
    lines: list[dict[str, Any]] = []
    words: list[dict[str, Any]] = []
    pos = 0
    for chars, char_boxes in char_lines:
        raw_text = "".join(chars)
        text = raw_text.strip()
        if not text:
            continue
        lead = len(raw_text) - len(raw_text.lstrip())
        if parts:
            parts.append("\n")
            pos += 1
        line_start = pos
        line_boxes = []
        for m in _WORD.finditer(text):
            k, j = m.span()
            found = [bx for bx in char_boxes[lead + k:lead + j] if bx is not None]
            if found:
                bbox = _union(found)
                line_boxes.append(bbox)
                words.append({"text": m.group(), "bbox": bbox, "confidence": 100.0, "offset": line_start + k})
        if line_boxes:
            lines.append({"text": text, "bbox": _union(line_boxes), "confidence": 100.0, "offset": line_start})
        parts.append(text)
        pos += len(text)
    return TextLayerPage("".join(parts), lines, words, float(width), float(height), int(rotation) % 360)


def _union(boxes: list[Any]) -> list[float]:
    if len(boxes) == 1:
        x0, y0, x1, y1 = boxes[0]
        return [round(x0, 2), round(y0, 2), round(x1, 2), round(y1, 2)]
    x0s, y0s, x1s, y1s = zip(*boxes)
    return [round(min(x0s), 2), round(min(y0s), 2), round(max(x1s), 2), round(max(y1s), 2)]


def _box(obj: dict[str, Any]) -> list[float]:
    return [round(float(obj["x0"]), 2), round(float(obj["top"]), 2), round(float(obj["x1"]), 2),
            round(float(obj["bottom"]), 2)]


def _place_words(raw_words: list[dict[str, Any]], page_text: str) -> list[dict[str, Any]]:
    """Give each word its offset in the page text by searching forward from the previous word.

    pdfplumber's words and lines come from the same character stream in (almost) the same order;
    a word that cannot be found nearby keeps ``offset: None`` rather than a wrong position.
    """
    words: list[dict[str, Any]] = []
    cursor = 0
    for w in raw_words:
        text = w["text"]
        idx = page_text.find(text, cursor)
        if idx == -1 or idx - cursor > 200:
            idx2 = page_text.find(text)
            offset = idx2 if idx2 != -1 and idx == -1 else None
        else:
            offset = idx
            cursor = idx + len(text)
        words.append({"text": text, "bbox": _box(w), "confidence": 100.0, "offset": offset})
    return words


# --------------------------------------------------------------------------------------------
# Rendering and the searchable PDF
# --------------------------------------------------------------------------------------------

def render_page(pdf: pdfium.PdfDocument, index: int, dpi: int) -> Image.Image:
    """Render one page to a grayscale Pillow image at ``dpi`` (the page's /Rotate applied)."""
    try:
        page = pdf[index]
    except (pdfium.PdfiumError, IndexError):
        raise CorruptFile("a PDF page cannot be loaded") from None
    try:
        bitmap = page.render(scale=dpi / 72.0, grayscale=True)
        try:
            return bitmap.to_pil().convert("L")
        finally:
            bitmap.close()
    except pdfium.PdfiumError:
        raise CorruptFile("a PDF page cannot be rendered") from None
    finally:
        page.close()


def safe_dpi(size_pt: tuple[float, float], dpi: int, max_pixels: int) -> int:
    """``dpi``, lowered when the page is so large that the raster would exceed ``max_pixels``.

    A PDF page can declare any size (up to 200 inches a side); rendering such a page at 300 dpi
    would need gigabytes, so the page's raster obeys the same pixel limit as uploaded images.
    """
    w_in, h_in = size_pt[0] / 72.0, size_pt[1] / 72.0
    if w_in <= 0 or h_in <= 0:
        return dpi
    limit = (max_pixels / (w_in * h_in)) ** 0.5
    return max(1, min(dpi, int(limit)))


def page_size_points(pdf: pdfium.PdfDocument, index: int) -> tuple[float, float]:
    """Width and height in points as displayed (after /Rotate)."""
    try:
        page = pdf[index]
    except pdfium.PdfiumError:
        raise CorruptFile("a PDF page cannot be loaded") from None
    try:
        w, h = page.get_size()
        if page.get_rotation() % 180:
            w, h = h, w
        return float(w), float(h)
    finally:
        page.close()


def build_ocr_page_pdf(jpeg: bytes, text_only_pdf: bytes | None, width_pt: float, height_pt: float) -> bytes:
    """One-page PDF: the page picture with tesseract's invisible text on top.

    Tesseract writes a text-only PDF (``textonly_pdf=1``) whose page has the picture's size at
    the given dpi; we place our JPEG underneath so the output stays small and shows the
    cleaned-up, upright page that the word boxes refer to.
    """
    dst = pdfium.PdfDocument.new()
    try:
        page = dst.new_page(width_pt, height_pt)
        img = pdfium.PdfImage.new(dst)
        img.load_jpeg(io.BytesIO(jpeg), inline=False, autoclose=True)
        img.set_matrix(pdfium.PdfMatrix().scale(width_pt, height_pt))
        page.insert_obj(img)
        if text_only_pdf:
            src = pdfium.PdfDocument(text_only_pdf)
            try:
                sw, sh = src.get_page_size(0)
                xobj = src.page_as_xobject(0, dst)
                obj = xobj.as_pageobject()
                if abs(sw - width_pt) > 0.5 or abs(sh - height_pt) > 0.5:
                    obj.set_matrix(pdfium.PdfMatrix().scale(width_pt / sw, height_pt / sh))
                page.insert_obj(obj)
            finally:
                src.close()
        page.gen_content()
        page.close()
        buf = io.BytesIO()
        dst.save(buf)
        return buf.getvalue()
    finally:
        dst.close()


class SearchablePdfWriter:
    """Collects pages (OCR'd one-page PDFs or original digital pages) and saves them as one file.

    Pages are imported as they come so only compressed page content accumulates, never pictures
    in raw form.
    """

    def __init__(self) -> None:
        self._doc = pdfium.PdfDocument.new()
        self.pages = 0

    def add_pdf_page(self, one_page_pdf: bytes) -> None:
        src = pdfium.PdfDocument(one_page_pdf)
        try:
            self._doc.import_pages(src, [0])
            self.pages += 1
        finally:
            src.close()

    def add_original_page(self, original: pdfium.PdfDocument, index: int) -> None:
        try:
            self._doc.import_pages(original, [index])
        except pdfium.PdfiumError:
            raise CorruptFile("a PDF page cannot be copied") from None
        self.pages += 1

    def save(self, path: Path) -> None:
        with path.open("wb") as fh:
            self._doc.save(fh)

    def close(self) -> None:
        self._doc.close()
