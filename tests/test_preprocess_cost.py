"""The cheaper first pass (issue 10): work skipped where a cheap measurement says it is not needed.

Real fixture images from ``tests/files`` (no corpus file), real OpenCV, real tesseract.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pypdfium2 as pdfium
import pytest
from PIL import Image

from jobs.extract import ocr, tesseract
from jobs.extract.preprocess import measure_text, normalise_illumination, preprocess, segmentation_mode, to_gray
from jobs.extract.tesseract import Recognition
from pipeline.settings import Settings

FILES = Path(__file__).parent / "files"


def _scan() -> np.ndarray:
    pdf = pdfium.PdfDocument(str(FILES / "scanned_discharge.pdf"))
    try:
        return to_gray(pdf[0].render(scale=300 / 72).to_pil())
    finally:
        pdf.close()


def test_clean_page_skips_illumination_normalisation():
    gray = _scan()
    assert normalise_illumination(gray) is gray  # evenly lit white paper: nothing to divide


def test_shadowed_page_is_still_normalised():
    gray = _scan()
    ramp = np.linspace(0.55, 1.0, gray.shape[1], dtype=np.float32)[None, :]
    shadowed = (gray.astype(np.float32) * ramp).astype(np.uint8)
    out = normalise_illumination(shadowed)
    assert out is not shadowed
    paper = gray > 200  # the paper pixels of the clean page
    # The shadow's left-to-right fall (~110 grey levels) is evened out to a few levels.
    left, right = out[:, : gray.shape[1] // 4][paper[:, : gray.shape[1] // 4]], out[:, -gray.shape[1] // 4:][
        paper[:, -gray.shape[1] // 4:]]
    assert abs(float(np.median(left)) - float(np.median(right))) < 15


def test_narrow_single_column_reads_as_one_block_and_two_columns_do_not():
    gray = _scan()
    assert segmentation_mode(measure_text(gray)) == 6
    assert segmentation_mode(measure_text(np.hstack([gray, gray]))) == 3
    assert preprocess(np.hstack([gray, gray]), 300).psm == 3


def _configs_of_one_page(monkeypatch, image: Image.Image) -> tuple[list[str], ocr.OcrPage]:
    seen: list[str] = []
    real = tesseract.call

    def counting(function, settings, **kwargs):
        seen.append(kwargs.get("config", ""))
        return real(function, settings, **kwargs)

    monkeypatch.setattr(tesseract, "call", counting)
    page = ocr.ocr_image(image, Settings(ocr_languages="eng"), dpi=None, want_pdf=False)
    return seen, page


def test_narrow_page_is_read_with_psm_6(monkeypatch):
    with Image.open(FILES / "screenshot_labs.png") as img:
        # The screenshot's body, below its coloured header bar: narrow dark-on-light text.
        body = img.convert("RGB").crop((0, img.height // 4, img.width, img.height))
    seen, page = _configs_of_one_page(monkeypatch, body)
    assert len(seen) == 1 and "--psm 6" in seen[0]
    assert "tessedit_do_invert=0" in seen[0]  # no dark area on a psm 6 page: no inverted re-reads
    assert len(page.recognition.words) >= 5


def test_a_dark_bar_keeps_full_layout_analysis_so_its_white_words_are_read(monkeypatch):
    """In one uniform block (psm 6) tesseract loses white-on-colour words: the portal
    screenshot's header bar must keep psm 3, and its title be read."""
    with Image.open(FILES / "screenshot_labs.png") as img:
        gray = to_gray(img)
        seen, page = _configs_of_one_page(monkeypatch, img.convert("RGB"))
    stats = measure_text(gray)
    assert segmentation_mode(stats) == 6  # narrow by width alone
    assert segmentation_mode(stats, gray) == 3  # the bar
    assert len(seen) == 1 and "--psm 3" in seen[0]
    assert "tessedit_do_invert" not in seen[0]  # the bar's white words need tesseract's inversion
    assert "results portal" in " ".join(page.recognition.text.lower().split())


@pytest.mark.parametrize("confidence,expected", [(50.0, True), (20.0, False)])
def test_faded_upright_page_skips_osd_but_another_script_does_not(confidence, expected):
    """Horizontal lines by geometry + a middling first reading: a hard page, not a turned one.
    A reading as poor as a Chinese page read in English still goes to OSD (script choice)."""
    with Image.open(FILES / "screenshot_labs.png") as img:
        prepared = preprocess(to_gray(img), None, orient=True)
    assert prepared.turn is not None and prepared.turn.horizontal
    words = [{"text": "Glucose", "bbox": [0, 0, 70, 12], "confidence": confidence, "offset": 0}]
    rec = Recognition("Glucose", [], words, confidence)
    assert rec.looks_poor()
    assert ocr._upright_enough(prepared, rec) is expected


def test_black_and_white_page_goes_to_tesseract_as_one_bit(monkeypatch, tmp_path):
    """A 1-bit scan stays 1-bit through the deskew, and tesseract is handed a PBM."""
    gray = _scan()
    bw = np.where(gray < 128, 0, 255).astype(np.uint8)
    import cv2

    centre = (bw.shape[1] / 2, bw.shape[0] / 2)
    skewed = cv2.warpAffine(bw, cv2.getRotationMatrix2D(centre, 1.5, 1.0), (bw.shape[1], bw.shape[0]),
                            flags=cv2.INTER_NEAREST, borderValue=255)
    prepared = preprocess(skewed, 300)
    assert prepared.bilevel and prepared.skew != 0.0
    assert set(np.unique(prepared.gray)) <= {0, 255}
    assert not preprocess(gray, 300).bilevel  # anti-aliased grey stays grey
    seen: list[str] = []
    real = tesseract.call

    def spying(function, settings, **kwargs):
        seen.append(str(kwargs.get("input_filename", "")))
        return real(function, settings, **kwargs)

    monkeypatch.setattr(tesseract, "call", spying)
    page = ocr.ocr_image(Image.fromarray(skewed).convert("1"), Settings(ocr_languages="eng"), dpi=300,
                         want_pdf=False)
    assert len(seen) == 1 and seen[0].endswith(".pbm")
    assert len(page.recognition.words) >= 10


def test_scans_skip_the_photo_checks_and_shaded_pages_do_not(monkeypatch):
    """A 1-bit page comes from a scanner or fax: no curvature, page edge or lighting to measure
    (~0.3 s of a 300 dpi page); an evenly lit grey page skips the curvature and page-edge checks;
    a shaded one (a photo) gets all of them."""
    from jobs.extract import preprocess as pre

    measured: list[str] = []
    for name in ("dewarp_if_curved", "correct_perspective", "normalise_illumination"):
        real = getattr(pre, name)

        def counting(gray, *args, _real=real, _name=name, **kwargs):
            measured.append(_name)
            return _real(gray, *args, **kwargs)

        monkeypatch.setattr(pre, name, counting)
    gray = _scan()
    bw = np.where(gray < 128, 0, 255).astype(np.uint8)
    prepared = pre.preprocess(bw, 300, photo_check=True)
    assert prepared.bilevel and not prepared.dewarped and not prepared.perspective
    assert measured == []
    # An evenly lit grey scan: no shadow over a bend, no desk around it, so no curvature or page
    # edge to look for either; the same page in a shadow is measured.
    pre.preprocess(gray, 300, photo_check=True)
    assert measured == ["normalise_illumination"]
    measured.clear()
    ramp = np.linspace(0.55, 1.0, gray.shape[1], dtype=np.float32)[None, :]
    pre.preprocess((gray.astype(np.float32) * ramp).astype(np.uint8), 300, photo_check=True)
    assert measured == ["dewarp_if_curved", "correct_perspective", "normalise_illumination"]


def test_unclear_axis_needs_a_middling_reading_and_vertical_lines_always_go_to_osd():
    from jobs.extract.preprocess import Turn

    with Image.open(FILES / "screenshot_labs.png") as img:
        prepared = preprocess(to_gray(img), None, orient=True)
    words = [{"text": "Glucose", "bbox": [0, 0, 70, 12], "confidence": 50.0, "offset": 0}]
    rec = Recognition("Glucose", [], words, 50.0)
    prepared.turn = Turn(180, vertical=False, horizontal=False, sure=False)
    assert ocr._upright_enough(prepared, rec)
    rec.mean_confidence = 40.0  # where upside-down receipts read
    assert not ocr._upright_enough(prepared, rec)
    prepared.turn = Turn(90, vertical=True, horizontal=False, sure=False)
    rec.mean_confidence = 59.0
    assert not ocr._upright_enough(prepared, rec)
