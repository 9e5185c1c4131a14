"""Our own invisible text layer: a one-page PDF holding only the recognised words, unseen.

Why not tesseract's ``textonly_pdf`` renderer: it costs 4-12 % of tesseract's CPU per page
(bench/README-ocr.md) and is paid by trial recognitions too, while the words and boxes are
already in the TSV. This writer produces the same contract (a page of the image's size at its
dpi, text in render mode 3) so :func:`jobs.extract.pdf.build_ocr_page_pdf` is unchanged.

The font follows the scheme tesseract uses: a Type0 font, ``Identity-H`` encoding, a
CIDFontType2 descendant whose embedded TrueType is tesseract's glyphless ``pdf.ttf``; every CID
draws glyph 1 (an empty glyph, CIDToGIDMap), CIDs are the UTF-16 code units of the text, and a
ToUnicode CMap maps them back so copy and search give the real text (any BMP character, CJK
included; characters beyond the BMP become U+FFFD).

Each word is drawn at its box: baseline at its line's bottom, font size the line's height,
horizontal scaling (``Tz``) so the word's advance equals its box width, and a trailing space
between words of a line so text extractors see word breaks.
"""
from __future__ import annotations

import functools
import os
import zlib
from pathlib import Path
from typing import Any, Iterable

#: Glyph advance of every character, in 1/1000 of the font size (the /DW of the CID font).
CHAR_WIDTH = 500
_FONT = b"/F1"
_CANDIDATES = ("/usr/share/tesseract-ocr/5/tessdata", "/usr/share/tesseract-ocr/4.00/tessdata",
               "/usr/share/tessdata", "/usr/local/share/tessdata")


@functools.lru_cache(maxsize=1)
def glyphless_font() -> bytes | None:
    """Tesseract's glyphless TrueType (``pdf.ttf`` in its tessdata folder), None when absent
    (the caller then falls back to tesseract's own renderer)."""
    dirs = [os.environ.get("TESSDATA_PREFIX", "")]
    dirs += [str(Path(d) / "tessdata") for d in dirs if d]
    for folder in [*dirs, *_CANDIDATES]:
        if folder and (Path(folder) / "pdf.ttf").is_file():
            return (Path(folder) / "pdf.ttf").read_bytes()
    return None


@functools.lru_cache(maxsize=1)
def _cid_to_gid() -> bytes:
    """Every one of the 65536 CIDs drawn with glyph 1, compressed (a few hundred bytes)."""
    return zlib.compress(b"\x00\x01" * 65536, 9)


def _units(text: str) -> list[int]:
    """UTF-16 code units used as CIDs; non-BMP characters become U+FFFD (one CID each)."""
    return [ord(ch) if ord(ch) < 0x10000 and not 0xD800 <= ord(ch) < 0xE000 else 0xFFFD for ch in text]


def _to_unicode(cids: Iterable[int]) -> bytes:
    """ToUnicode CMap mapping each used CID to itself (bfchar, 100 entries per block)."""
    used = sorted(set(cids))
    out = [b"/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n"
           b"/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n"
           b"/CMapName /Adobe-Identity-UCS def\n/CMapType 2 def\n"
           b"1 begincodespacerange\n<0000> <FFFF>\nendcodespacerange\n"]
    for i in range(0, len(used), 100):
        chunk = used[i:i + 100]
        out.append(b"%d beginbfchar\n" % len(chunk))
        out.extend(b"<%04X> <%04X>\n" % (c, c) for c in chunk)
        out.append(b"endbfchar\n")
    out.append(b"endcmap\nCMapName currentdict /CMap defineresource pop\nend\nend\n")
    return b"".join(out)


def _content(lines: list[list[dict[str, Any]]], scale: float, height_pt: float) -> tuple[bytes, set[int]]:
    """Content stream drawing the words invisibly; returns it and the CIDs it uses."""
    ops: list[bytes] = [b"BT\n3 Tr\n"]
    used: set[int] = set()
    for line_words in lines:
        top = min(w["bbox"][1] for w in line_words) * scale
        bottom = max(w["bbox"][3] for w in line_words) * scale
        size = max(bottom - top, 1.0)
        baseline = height_pt - bottom
        ops.append(b"%s %.2f Tf\n" % (_FONT, size))
        for i, word in enumerate(line_words):
            cids = _units(word["text"])
            if not cids:
                continue
            x0, _, x1, _ = word["bbox"]
            width = max((x1 - x0) * scale, 0.1)
            tz = 100.0 * width / (len(cids) * CHAR_WIDTH / 1000.0 * size)
            if i < len(line_words) - 1:
                cids = [*cids, 0x20]
            used.update(cids)
            hexed = "".join(f"{c:04X}" for c in cids).encode("ascii")
            ops.append(b"%.3f Tz\n1 0 0 1 %.2f %.2f Tm\n<%s> Tj\n" % (tz, x0 * scale, baseline, hexed))
    ops.append(b"ET\n")
    return b"".join(ops), used


def _lines_of(words: list[dict[str, Any]], lines: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Group words by line through their text offsets (lines and words come in TSV order)."""
    grouped: list[list[dict[str, Any]]] = [[] for _ in lines]
    starts = [ln["offset"] for ln in lines]
    j = 0
    for w in words:
        while j + 1 < len(starts) and w["offset"] >= starts[j + 1]:
            j += 1
        grouped[j].append(w)
    return [g for g in grouped if g]


def build_text_layer(words: list[dict[str, Any]], lines: list[dict[str, Any]], width_px: int, height_px: int,
                     dpi: float, font: bytes | None = None) -> bytes:
    """One-page PDF of the image's size at ``dpi`` holding only the words, invisible.

    ``words`` and ``lines`` are a :class:`~jobs.extract.tesseract.Recognition`'s (boxes in
    pixels, with text offsets). ``font`` defaults to :func:`glyphless_font`; raises
    ``FileNotFoundError`` when there is none.
    """
    font = font if font is not None else glyphless_font()
    if font is None:
        raise FileNotFoundError("tesseract's pdf.ttf is not installed")
    scale = 72.0 / float(dpi)
    width_pt, height_pt = width_px * scale, height_px * scale
    content, used = _content(_lines_of(words, lines) if lines else [], scale, height_pt)
    content_z = zlib.compress(content, 6)
    cmap = zlib.compress(_to_unicode(used), 6)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %.2f %.2f] /Resources << /Font << %s 5 0 R >> >> "
        b"/Contents 4 0 R >>" % (width_pt, height_pt, _FONT),
        _stream(b"/Filter /FlateDecode", content_z),
        b"<< /Type /Font /Subtype /Type0 /BaseFont /GlyphLessFont /Encoding /Identity-H "
        b"/DescendantFonts [6 0 R] /ToUnicode 7 0 R >>",
        b"<< /Type /Font /Subtype /CIDFontType2 /BaseFont /GlyphLessFont "
        b"/CIDSystemInfo << /Registry (Adobe) /Ordering (Identity) /Supplement 0 >> "
        b"/FontDescriptor 8 0 R /CIDToGIDMap 9 0 R /DW %d >>" % CHAR_WIDTH,
        _stream(b"/Filter /FlateDecode", cmap),
        b"<< /Type /FontDescriptor /FontName /GlyphLessFont /Flags 5 /FontBBox [0 0 %d 1000] "
        b"/ItalicAngle 0 /Ascent 1000 /Descent 0 /CapHeight 1000 /StemV 80 /FontFile2 10 0 R >>" % CHAR_WIDTH,
        _stream(b"/Filter /FlateDecode", _cid_to_gid()),
        _stream(b"/Length1 %d" % len(font), font),
    ]
    return _write(objects)


def _stream(extra: bytes, data: bytes) -> bytes:
    return b"<< %s /Length %d >>\nstream\n%s\nendstream" % (extra, len(data), data)


def _write(objects: list[bytes]) -> bytes:
    """Serialise numbered objects with a classic cross-reference table and trailer."""
    out = bytearray(b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for num, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (num, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)
