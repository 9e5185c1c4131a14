"""Faint print beside a dark pen note or scanner edge (issue 10, receipts).

Otsu's threshold on such a page splits the dark ink from print-plus-paper, so the glyph
measurement saw only the note and tesseract's own Otsu read nothing (a development receipt read
0 words). Built from the committed scanned page: its print lightened to the grey of a faded
thermal receipt, a thick pen scribble and a dark scanner edge drawn on it. Real OpenCV, real
tesseract.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pypdfium2 as pdfium
import pytest
from PIL import Image

from jobs.extract import preprocess as prep
from jobs.extract.ocr import ocr_image
from pipeline.settings import Settings

FILES = Path(__file__).parent / "files"


@pytest.fixture(scope="module")
def faded_with_pen() -> np.ndarray:
    pdf = pdfium.PdfDocument(str(FILES / "scanned_discharge.pdf"))
    try:
        gray = prep.to_gray(pdf[0].render(scale=300 / 72).to_pil())
    finally:
        pdf.close()
    faint = (200 + gray.astype(np.float32) * (55 / 255)).astype(np.uint8)  # print ~200, paper 255
    rng = np.random.default_rng(3)
    pts = np.cumsum(rng.integers(-40, 60, size=(40, 2)), axis=0) + [300, 200]
    cv2.polylines(faint, [pts.astype(np.int32)], False, 20, thickness=14)
    cv2.rectangle(faint, (0, faint.shape[0] - 40), (faint.shape[1], faint.shape[0]), 10, -1)
    return faint


def test_the_print_is_measured_not_the_pen(faded_with_pen):
    stats = prep.measure_text(prep.normalise_illumination(faded_with_pen))
    assert stats.boxes is not None and len(stats.boxes) >= 100
    assert stats.faint_ink is not None and 150 < stats.faint_ink < 250
    # The page's text is ~26 px tall at 300 dpi; the pen's strokes would say far more.
    assert 15 <= stats.median_height <= 40


def test_faint_print_beside_a_pen_note_is_read(faded_with_pen, monkeypatch):
    words = {"discharge", "summary", "metformin", "diabetes", "follow"}
    page = ocr_image(Image.fromarray(faded_with_pen), Settings(), dpi=None)
    read = {w.strip(".,").lower() for w in page.recognition.text.split()}
    assert words <= read
    # Without the stretch tesseract's own threshold loses the print (what the test guards).
    monkeypatch.setattr(prep, "stretch_faint", lambda gray, stats: gray)
    page = ocr_image(Image.fromarray(faded_with_pen), Settings(), dpi=None)
    assert len(words & {w.strip(".,").lower() for w in page.recognition.text.split()}) <= 1


def test_a_clean_page_is_not_stretched():
    pdf = pdfium.PdfDocument(str(FILES / "scanned_discharge.pdf"))
    try:
        gray = prep.to_gray(pdf[0].render(scale=300 / 72).to_pil())
    finally:
        pdf.close()
    stats = prep.measure_text(gray)
    assert stats.faint_ink is None
    assert prep.stretch_faint(gray, stats) is gray
