"""Letters as word-processor documents and plain text: DOCX, ODT, RTF, TXT -> text, pages, a page image.

Patients and clinics send referral letters as DOCX, ODT, RTF or plain text. This module

* identifies them from their bytes (:func:`sniff_zip` for the ZIP containers, :func:`looks_like_text`
  for plain text: no NUL byte, few control characters, and it decodes);
* reads their text with pure-Python libraries (python-docx, odfpy, striprtf; plain text as UTF-8,
  UTF-16/32 with a BOM, else Windows-1252/Latin-1), paragraphs one per line, table cells joined
  by tabs, in document order (:func:`read_text`);
* lays the text out on Letter-sized pages (11 pt DejaVu Sans, 1 inch margins; the font Pillow
  ships when DejaVu is not installed) so that ``pages.json`` has pages, lines and words with boxes
  in points like a PDF text layer (``source`` "text"), and page 1 can be drawn as the image the
  renditions are made from (:func:`layout`, :func:`render_page`).

``text.txt`` is the document's text with pages split at line ends or between words (that newline or
space becomes the form feed); only a word longer than a whole line, broken across two pages, gets
a form feed inserted. Every word and line keeps its exact offset.

Every way a file can fail to read becomes a RejectedInput (``corrupt_file``, ``decompression_bomb``
for a ZIP whose parts expand past :data:`MAX_EXPANDED_BYTES`, ``too_large`` past the page limit);
the libraries' own messages are never kept (they can quote document text).
"""
from __future__ import annotations

import codecs
import functools
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import CorruptFile, DecompressionBomb, MedintakeError, TooLarge, UnsupportedType
from pipeline.settings import Settings

if TYPE_CHECKING:
    from PIL import Image as PILImage

MAX_EXPANDED_BYTES = 512 * 1024 * 1024  # all parts of a DOCX/ODT, uncompressed (the libraries read them all)
ODT_MIMETYPES = (b"application/vnd.oasis.opendocument.text", b"application/vnd.oasis.opendocument.text-template")
TEXT_SNIFF_BYTES = 64 * 1024
MAX_CONTROL_SHARE = 0.01  # control characters (other than tab, newlines, form feed) in a text file

# Page layout, in points (1/72 inch): US Letter, 1 inch margins, 11 pt type on 14 pt lines.
PAGE_WIDTH, PAGE_HEIGHT = 612.0, 792.0
MARGIN = 72.0
FONT_SIZE = 11.0
LINE_HEIGHT = 14.0
RENDER_DPI = 150  # page 1 image for the renditions: 1275 x 1650 pixels
FONT_FILES = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
              "/usr/share/fonts/dejavu/DejaVuSans.ttf")


# --------------------------------------------------------------------------------------------
# Identification
# --------------------------------------------------------------------------------------------

def sniff_zip(path: Path) -> str | None:
    """"DOCX", "ODT" or None (another ZIP) for a file starting with a ZIP local header."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if "word/document.xml" in names:
                return "DOCX"
            if "mimetype" in names:
                info = zf.getinfo("mimetype")
                if info.file_size <= 256 and zf.read(info).strip() in ODT_MIMETYPES:
                    return "ODT"
            return None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, KeyError, ValueError, RuntimeError,
            NotImplementedError):
        with path.open("rb") as fh:
            head = fh.read(4096)
        if b"[Content_Types].xml" in head or b"word/" in head or any(m in head for m in ODT_MIMETYPES):
            raise CorruptFile("the word-processor document (ZIP container) is damaged") from None
        return None


def decode_text(data: bytes) -> str | None:
    """The text of a plain-text file, or None when these bytes are not text.

    A BOM decides UTF-8/16/32; otherwise UTF-8, then Windows-1252, then Latin-1. Text has no NUL
    byte and at most 1 % other control characters (tab, CR, LF and form feed are fine).
    """
    for bom, codec in ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"),
                       (codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"),
                       (codecs.BOM_UTF16_BE, "utf-16-be")):
        if data.startswith(bom):
            try:
                text = data[len(bom):].decode(codec)
            except UnicodeDecodeError:
                return None
            return text if _plausible(text) else None
    if b"\x00" in data:
        return None
    for codec in ("utf-8", "cp1252", "latin-1"):
        try:
            text = data.decode(codec)
        except UnicodeDecodeError:
            continue
        return text if _plausible(text) else None
    return None


_CONTROLS = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")


def _plausible(text: str) -> bool:
    if "\x00" in text:
        return False
    limit = MAX_CONTROL_SHARE * max(1, len(text))
    controls = 0
    for _ in _CONTROLS.finditer(text):
        controls += 1
        if controls > limit:
            return False
    return True


def looks_like_text(path: Path) -> bool:
    """Whether the file's first 64 KiB are plain text (a character cut at the end of them is fine)."""
    with path.open("rb") as fh:
        head = fh.read(TEXT_SNIFF_BYTES)
    if not head:
        return False
    if decode_text(head) is not None:
        return True
    if len(head) < TEXT_SNIFF_BYTES:
        return False
    # The 64 KiB may end inside a UTF-8 sequence or a UTF-16 surrogate pair: try shorter cuts.
    return any(decode_text(head[:-cut]) is not None for cut in (1, 2, 3))


# --------------------------------------------------------------------------------------------
# Reading the text
# --------------------------------------------------------------------------------------------

def read_text(path: Path, fmt: str) -> str:
    """The document's text, paragraphs one per line; raises a RejectedInput when it cannot be read."""
    try:
        if fmt == "DOCX":
            text = _docx_text(path)
        elif fmt == "ODT":
            text = _odt_text(path)
        elif fmt == "RTF":
            text = _rtf_text(path)
        elif fmt == "TXT":
            text = decode_text(path.read_bytes())
            if text is None:
                raise UnsupportedType("the upload is neither text nor a supported document or image format")
        else:
            raise UnsupportedType("the upload is not a supported document format")
    except MedintakeError:
        raise
    except (MemoryError, RecursionError):
        raise
    except Exception:  # parsers raise anything on damaged files; their messages can quote the text
        raise CorruptFile(f"the {fmt} document cannot be read") from None
    return _clean(text)


def _clean(text: str) -> str:
    """Newlines normalised to LF, form feeds kept for paging only, trailing blanks trimmed."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n").replace("\x0b", "\n")
    text = _CONTROLS.sub(" ", text)
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return "\n".join(lines)


def _check_zip(path: Path) -> None:
    with zipfile.ZipFile(path) as zf:
        total = sum(max(0, i.file_size) for i in zf.infolist())
    if total > MAX_EXPANDED_BYTES:
        raise DecompressionBomb(f"the document's parts expand to more than {MAX_EXPANDED_BYTES} bytes")


def _docx_text(path: Path) -> str:
    import docx
    from docx.table import Table

    _check_zip(path)
    try:
        document = docx.Document(str(path))
    except ValueError:
        # python-docx opens only the .docx content type; macro-enabled (.docm) and template (.dotx,
        # .dotm) files have the same word/document.xml, read here directly.
        return _wordml_text(path)
    parts: list[str] = []
    section = document.sections[0] if len(document.sections) else None
    if section is not None and not section.header.is_linked_to_previous:
        parts += _docx_blocks(section.header.iter_inner_content(), Table)
    parts += _docx_blocks(document.iter_inner_content(), Table)
    if section is not None and not section.footer.is_linked_to_previous:
        parts += _docx_blocks(section.footer.iter_inner_content(), Table)
    return "\n".join(parts)


def _docx_blocks(blocks: Any, table_cls: type) -> list[str]:
    out: list[str] = []
    for block in blocks:
        if isinstance(block, table_cls):
            for row in block.rows:
                cells: list[str] = []
                seen: set[int] = set()
                for cell in row.cells:
                    if id(cell._tc) in seen:  # a merged cell is listed once per grid column
                        continue
                    seen.add(id(cell._tc))
                    cells.append(" ".join(p.text for p in cell.paragraphs).strip())
                out.append("\t".join(cells))
        else:
            out.append(block.text)
    return out


_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


def _wordml_text(path: Path) -> str:
    """Paragraphs of word/document.xml (w:p; w:t text, w:tab, w:br; table cells joined by tabs)."""
    from defusedxml import ElementTree

    with zipfile.ZipFile(path) as zf:
        root = ElementTree.fromstring(zf.read("word/document.xml"))
    body = root.find(f"{_W}body")
    if body is None:
        raise CorruptFile("the DOCX document has no body")

    def paragraph(p: Any) -> str:
        parts = []
        for node in p.iter():
            if node.tag == f"{_W}t" and node.text:
                parts.append(node.text)
            elif node.tag == f"{_W}tab":
                parts.append("\t")
            elif node.tag in (f"{_W}br", f"{_W}cr"):
                parts.append("\n")
        return "".join(parts)

    lines: list[str] = []
    for block in body:
        if block.tag == f"{_W}p":
            lines.append(paragraph(block))
        elif block.tag == f"{_W}tbl":
            for row in block.iter(f"{_W}tr"):
                lines.append("\t".join(" ".join(paragraph(p) for p in cell.iter(f"{_W}p")).strip()
                                       for cell in row.findall(f"{_W}tc")))
    return "\n".join(lines)


def _odt_text(path: Path) -> str:
    from odf import teletype
    from odf.namespaces import TABLENS, TEXTNS
    from odf.opendocument import load

    _check_zip(path)
    document = load(str(path))
    lines: list[str] = []

    def walk(node: Any) -> None:
        for child in node.childNodes:
            qname = getattr(child, "qname", None)
            if qname in ((TEXTNS, "p"), (TEXTNS, "h")):
                lines.append(teletype.extractText(child))
            elif qname == (TABLENS, "table-row"):
                cells = [" ".join(teletype.extractText(p) for p in cell.childNodes
                                  if getattr(p, "qname", None) in ((TEXTNS, "p"), (TEXTNS, "h"))).strip()
                         for cell in child.childNodes if getattr(cell, "qname", None) == (TABLENS, "table-cell")]
                lines.append("\t".join(cells))
            elif qname is not None:
                walk(child)

    walk(document.text)
    return "\n".join(lines)


def _rtf_text(path: Path) -> str:
    from striprtf.striprtf import rtf_to_text

    raw = path.read_bytes().decode("latin-1")  # RTF is 7-bit; \'xx escapes carry the code page
    return rtf_to_text(raw, encoding="cp1252", errors="replace")


# --------------------------------------------------------------------------------------------
# Layout: pages, lines and words in points
# --------------------------------------------------------------------------------------------

@dataclass
class PageLayout:
    """One laid-out page: its text (a slice of the document text) with lines and words placed."""

    start: int  # offset of the page's text in the document text
    text: str
    lines: list[dict[str, Any]] = field(default_factory=list)
    words: list[dict[str, Any]] = field(default_factory=list)


@functools.lru_cache(maxsize=4)
def font(size: float) -> Any:
    """DejaVu Sans at ``size`` (Pillow's bundled font when DejaVu is not installed)."""
    from PIL import ImageFont

    for candidate in FONT_FILES:
        if Path(candidate).exists():
            return ImageFont.truetype(candidate, size)
    return ImageFont.load_default(size)


def layout(text: str, max_pages: int) -> list[PageLayout]:
    """Wrap ``text`` into lines that fit the text width and stack them on pages (at least one)."""
    measure = font(FONT_SIZE)
    widths: dict[str, float] = {}

    def width(s: str) -> float:
        w = widths.get(s)
        if w is None:
            w = float(measure.getlength(s))
            if len(widths) < 200_000:
                widths[s] = w
        return w

    space = width(" ")
    usable = PAGE_WIDTH - 2 * MARGIN
    per_page = int((PAGE_HEIGHT - 2 * MARGIN) // LINE_HEIGHT)
    # Lines as (start, end) offsets into text, each with its words (start, end, x0, x1).
    placed: list[tuple[int, int, list[tuple[int, int, float, float]]]] = []
    pos = 0
    for para in text.split("\n"):
        para_start = pos
        pos += len(para) + 1
        line_start, x, words = para_start, 0.0, []
        i, n = 0, len(para)
        if not para.strip():
            placed.append((para_start, para_start + len(para), []))
            continue
        while i < n:
            j = i
            while j < n and para[j] in " \t":
                j += 1
            k = j
            while k < n and para[k] not in " \t":
                k += 1
            if j == k:
                break
            gap = sum(space * (4 if c == "\t" else 1) for c in para[i:j]) if words else 0.0
            word = para[j:k]
            w = width(word)
            if words and x + gap + w > usable:
                placed.append((line_start, para_start + words[-1][1] - para_start, words))
                line_start, x, words, gap = para_start + j, 0.0, [], 0.0
            while w > usable and not words:  # one word wider than the line: break it
                cut = max(1, int(len(word) * usable / w))
                while cut > 1 and width(word[:cut]) > usable:
                    cut -= 1
                placed.append((para_start + j, para_start + j + cut,
                               [(para_start + j, para_start + j + cut, 0.0, width(word[:cut]))]))
                j += cut
                word = para[j:k]
                w = width(word)
                line_start = para_start + j
                if not word:
                    break
            if word:
                x0 = x + gap
                words.append((para_start + j, para_start + k, x0, x0 + w))
                x = x0 + w
            i = k
        if words:
            placed.append((line_start, words[-1][1], words))
        if len(placed) > per_page * max_pages:
            raise TooLarge(f"the document has more than {max_pages} pages; the limit is {max_pages}")
    pages: list[PageLayout] = []
    for first in range(0, max(1, len(placed)), per_page):
        chunk = placed[first:first + per_page]
        start = chunk[0][0] if chunk else 0
        if first == 0:
            start = 0
        end = len(text)
        if first + per_page < len(placed):
            end = placed[first + per_page][0]
            if end > 0 and text[end - 1] in " \t\n":
                end -= 1  # the space or newline before the next page becomes the form feed
        page = PageLayout(start, text[start:max(start, end)])
        for row, (ls, le, words) in enumerate(chunk):
            top = MARGIN + row * LINE_HEIGHT
            bottom = top + LINE_HEIGHT
            if words:
                page.lines.append({"text": text[ls:le], "bbox": [round(MARGIN + words[0][2], 2), round(top, 2),
                                                                 round(MARGIN + words[-1][3], 2), round(bottom, 2)],
                                   "confidence": 100.0, "offset": ls - start})
            for ws, we, x0, x1 in words:
                page.words.append({"text": text[ws:we], "bbox": [round(MARGIN + x0, 2), round(top, 2),
                                                                  round(MARGIN + x1, 2), round(bottom, 2)],
                                   "confidence": 100.0, "offset": ws - start})
        pages.append(page)
    if len(pages) > max_pages:
        raise TooLarge(f"the document lays out to {len(pages)} pages; the limit is {max_pages}")
    return pages


def render_page(page: PageLayout, dpi: int = RENDER_DPI) -> "PILImage.Image":
    """The laid-out page drawn in black on white, as an ``L`` image at ``dpi``."""
    from PIL import Image, ImageDraw

    scale = dpi / 72.0
    img = Image.new("L", (round(PAGE_WIDTH * scale), round(PAGE_HEIGHT * scale)), 255)
    draw = ImageDraw.Draw(img)
    face = font(FONT_SIZE * scale)
    for word in page.words:
        x0, top = word["bbox"][0], word["bbox"][1]
        draw.text((x0 * scale, (top + (LINE_HEIGHT - FONT_SIZE) / 2) * scale), word["text"], font=face, fill=0)
    return img


def document_pages(path: Path, fmt: str, settings: Settings) -> tuple[str, list[PageLayout]]:
    """Read and lay out a document: its text and its pages."""
    text = read_text(path, fmt)
    return text, layout(text, settings.max_pages)
