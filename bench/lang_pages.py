"""Render ground-truth paragraphs to page images that look scanned (benchmark and tests).

A4 at 300 dpi, 11 pt text, wrapped to the text block; mild scan noise: a small rotation, blur,
grain and a grey paper level, seeded so a page is the same on every run. Latin text is drawn
with DejaVu Sans (fonts-dejavu-core, already in the image list), CJK and Hangul with WenQuanYi
Micro Hei (fonts-wqy-microhei, 5 MB: the smallest Debian font covering Han, kana and Hangul).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

LATIN_FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
CJK_FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
NO_SPACES = {"chi_sim", "chi_tra", "jpn"}  # wrapped by character; compared without spaces
_NO_LINE_START = set("。、，．：；！？）」』")  # CJK line-breaking rule: these never start a line


def font_for(lang: str) -> Path:
    return CJK_FONT if lang in NO_SPACES or lang == "kor" else LATIN_FONT


def _wrap(text: str, font: ImageFont.FreeTypeFont, width: int, by_char: bool) -> list[str]:
    units = list(text) if by_char else text.split(" ")
    sep = "" if by_char else " "
    lines: list[str] = []
    cur = ""
    for unit in units:
        cand = unit if not cur else cur + sep + unit
        if font.getlength(cand) <= width or not cur or (by_char and unit in _NO_LINE_START):
            cur = cand
        else:
            lines.append(cur)
            cur = unit
    if cur:
        lines.append(cur)
    return lines


def render_page(lang: str, text: str, *, seed: int = 0, pt: float = 11.0, dpi: int = 300,
                width_px: int | None = None, noise: bool = True) -> tuple[Image.Image, str]:
    """A grayscale page image of ``text`` and the reference text with the rendered line breaks."""
    px = int(round(pt * dpi / 72))
    font = ImageFont.truetype(str(font_for(lang)), px)
    page_w = width_px or int(8.27 * dpi)
    margin = int(0.8 * dpi)
    lines = _wrap(text, font, page_w - 2 * margin, lang in NO_SPACES)
    step = int(px * 1.6)
    page_h = max(int(11.69 * dpi) if width_px is None else 0, 2 * margin + step * len(lines))
    img = Image.new("L", (page_w, page_h), 255)
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        draw.text((margin, margin + i * step), line, font=font, fill=20)
    if noise:
        rng = np.random.default_rng(seed)
        img = img.rotate(float(rng.uniform(-0.6, 0.6)), resample=Image.BICUBIC, fillcolor=255)
        img = img.filter(ImageFilter.GaussianBlur(0.7))
        arr = np.asarray(img, dtype=np.float32) * 0.92 + 8
        arr += rng.normal(0, 9, arr.shape)
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")
    return img, "\n".join(lines)
