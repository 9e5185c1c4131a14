"""Small real documents for the load and fault drills: many of them, each one distinct.

A burst of hundreds of uploads must fit a CI budget, so every file is as small as a real upload of
its type can be: a one-page born-digital PDF (text layer, no OCR), a PNG and a JPEG holding one
printed line (real Tesseract runs on them), and a DOCX letter (python-docx). Each carries its
sequence number in the text, so no two files share bytes (the local runtime keys uploads by
content hash; equal bytes would be one document) and each document's text is known.
All text is fabricated; it holds no patient data.
"""
from __future__ import annotations

import io
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "files"))

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
#: The cycle of types in a mixed burst (weights: PDFs are the most common upload).
MIX = ("pdf", "png", "pdf", "jpg", "docx", "pdf", "png", "jpg")
SUFFIX = {"pdf": ".pdf", "png": ".png", "jpg": ".jpg", "docx": ".docx"}


def line(n: int) -> str:
    return f"Metformin 500 mg twice daily note {n:05d}"


def pdf_bytes(n: int) -> bytes:
    from make_fixtures import build_text_pdf  # the fixture writer: hand-made, valid PDF syntax

    return build_text_pdf([[f"Clinic letter {n:05d}", line(n), "Denies chest pain."]])


def image_bytes(n: int, fmt: str) -> bytes:
    """One printed line at about 300 dpi text height: small, and legible to Tesseract."""
    img = Image.new("L", (760, 90), 255)
    ImageDraw.Draw(img).text((20, 25), line(n), font=ImageFont.truetype(FONT, 30), fill=20)
    out = io.BytesIO()
    img.save(out, format="PNG" if fmt == "png" else "JPEG", quality=90)
    return out.getvalue()


def docx_bytes(n: int) -> bytes:
    import docx

    document = docx.Document()
    document.add_heading(f"Referral {n:05d}", level=1)
    document.add_paragraph(line(n))
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def make(kind: str, n: int) -> bytes:
    if kind == "pdf":
        return pdf_bytes(n)
    if kind in ("png", "jpg"):
        return image_bytes(n, kind)
    if kind == "docx":
        return docx_bytes(n)
    raise ValueError(kind)


def write_mixed(folder: Path, count: int, start: int = 0) -> list[tuple[Path, str]]:
    """``count`` distinct files of the mixed types in ``folder``; (path, kind) each."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(start, start + count):
        kind = MIX[i % len(MIX)]
        path = folder / f"doc-{i:05d}{SUFFIX[kind]}"
        path.write_bytes(make(kind, i))
        out.append((path, kind))
    return out


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[k]
