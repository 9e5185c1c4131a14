"""Turned pages are found from the glyph geometry before the first recognition (issue 10).

Real tesseract on real fixture images (``tests/files``); the one place that starts tesseract,
``jobs.extract.tesseract.call``, is wrapped to count the runs, not replaced.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from jobs.extract import ocr, orientation, tesseract
from jobs.extract.preprocess import Turn, measure_text, normalise_illumination, preprocess, rotate_right_angle, \
    text_turn, to_gray
from pipeline.settings import Settings

FILES = Path(__file__).parent / "files"


@pytest.fixture
def settings() -> Settings:
    return Settings(ocr_languages="eng")


@pytest.fixture
def calls(monkeypatch):
    """Names of the pytesseract functions started, in order (the real program still runs)."""
    seen: list[str] = []
    real = tesseract.call

    def counting(function, settings, **kwargs):
        seen.append(function.__name__)
        return real(function, settings, **kwargs)

    monkeypatch.setattr(tesseract, "call", counting)
    return seen


def _labs() -> Image.Image:
    with Image.open(FILES / "screenshot_labs.png") as img:
        return img.convert("RGB")


@pytest.mark.parametrize("turned_cw", [90, 180, 270])
def test_turned_page_costs_one_tesseract_run(settings, calls, turned_cw):
    upright = ocr.ocr_image(_labs(), settings, dpi=None, want_pdf=False)
    calls.clear()
    gray = rotate_right_angle(to_gray(_labs()), turned_cw)
    page = ocr.ocr_image(Image.fromarray(gray), settings, dpi=None, want_pdf=False)
    assert calls == ["run_tesseract"]  # no wasted first pass, no OSD
    assert page.rotation == (360 - turned_cw) % 360
    assert page.recognition.text == upright.recognition.text
    assert page.width > page.height


def test_upright_page_is_not_turned(settings, calls):
    page = ocr.ocr_image(_labs(), settings, dpi=None, want_pdf=False)
    assert calls == ["run_tesseract"] and page.rotation == 0


def test_sideways_phone_photo_axis_is_measured():
    """The EXIF-6 photo's pixels lie on their side: the lines run vertically in the raw array."""
    with Image.open(FILES / "phone_photo_exif6.jpg") as img:
        gray = to_gray(img)
    raw = text_turn(measure_text(normalise_illumination(gray)))
    assert raw is not None and raw.vertical and raw.rotation in (90, 270)
    upright = text_turn(measure_text(normalise_illumination(rotate_right_angle(gray, 90))))
    assert upright is not None and upright.horizontal and not upright.vertical


def test_wrong_direction_guess_costs_one_more_run_and_no_osd(settings, calls, tmp_path):
    """When the geometry names the axis but not the direction, a wrong guess is undone by one
    recognition of the opposite direction, never by OSD."""
    gray = rotate_right_angle(to_gray(_labs()), 90)  # needs 270 to be upright
    wrong = preprocess(rotate_right_angle(gray, 90), None)
    wrong.rotation, wrong.turn = 90, Turn(90, True, False, False)
    first = tesseract.recognise(wrong.gray, settings, dpi=wrong.dpi, want_pdf=False, workdir=tmp_path,
                                languages="eng")
    assert first.looks_poor()
    rotation, prepared, rec = orientation.fix_orientation(gray, wrong, first, settings, None, False, tmp_path,
                                                          True)
    assert rotation == 270 and not rec.looks_poor()
    assert calls == ["run_tesseract", "run_tesseract"]
    assert prepared.gray.shape[1] > prepared.gray.shape[0]
