"""Which way is up: Tesseract's OSD when the first recognition looks poor, else trials.

An upright page costs exactly one recognition: orientation is looked at only when the result
looks wrong (low confidence, or word boxes standing upright). OSD names the rotation when it can;
when it cannot decide (sparse pages) the rotations are tried and scored by confident horizontal
characters, and a dense page whose words stand upright is tried at 90 and 270 degrees.

OSD also names the page's script; with ``ocr_languages=auto`` that answer chooses the traineddata
(:mod:`jobs.extract.languages`): a Chinese, Japanese or Korean page reads as garbage in the
first pass, so it reaches here anyway, and is read again, upright, with its script's language.
The new reading is kept only when it scores better, so a wrong script guess costs one call.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from jobs.extract import languages as lang
from jobs.extract.preprocess import Prepared, preprocess
from jobs.extract.tesseract import Recognition, detect_orientation, recognise
from pipeline.settings import Settings


def rotate_right_angle(gray: np.ndarray, degrees_cw: int) -> np.ndarray:
    """Rotate by a multiple of 90 degrees clockwise (lossless)."""
    codes = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}
    degrees_cw %= 360
    return gray if degrees_cw == 0 else cv2.rotate(gray, codes[degrees_cw])


def fix_orientation(gray: np.ndarray, prepared: Prepared, rec: Recognition, settings: Settings,
                    dpi: float | None, want_pdf: bool, workdir: Path,
                    photo_check: bool) -> tuple[int, Prepared, Recognition]:
    """Ask OSD which way is up (and, unpinned, which script); if it cannot tell and the page is
    small, try each rotation. One OSD call per page at most."""
    osd = detect_orientation(prepared.gray, settings, workdir=workdir)
    script_lang = lang.for_script(osd.script if osd else None, settings)
    languages = script_lang or rec.languages or None
    relang = script_lang is not None and script_lang != rec.languages
    if osd is not None:
        candidates = [osd.rotation] if (osd.rotation or relang) else []
    elif len(rec.words) <= 40:
        candidates = [180, 90, 270]
    elif rec.mostly_vertical():
        candidates = [90, 270]
    else:
        candidates = []
    best = (0, prepared, rec)
    for angle in candidates:
        prep = prepared if angle == 0 else preprocess(rotate_right_angle(gray, angle), dpi, photo_check=photo_check)
        cand = recognise(prep.gray, settings, dpi=prep.dpi, want_pdf=want_pdf, workdir=workdir, languages=languages)
        if cand.quality > best[2].quality * 1.1:
            best = (angle, prep, cand)
    return best
