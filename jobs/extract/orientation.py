"""Which way is up: Tesseract's OSD when the first recognition looks poor, else trials.

An upright page costs exactly one recognition: orientation is looked at only when the result
looks wrong (low confidence, or word boxes standing upright). OSD names the rotation when it can;
when it cannot decide (sparse pages) the rotations are tried and scored by confident horizontal
characters, and a dense page whose words stand upright is tried at 90 and 270 degrees.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

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
    """Ask OSD which way is up; if it cannot tell and the page is small, try each rotation."""
    osd = detect_orientation(prepared.gray, settings, workdir=workdir)
    if osd is not None:
        candidates = [osd[0]] if osd[0] else []
    elif len(rec.words) <= 40:
        candidates = [180, 90, 270]
    elif rec.mostly_vertical():
        candidates = [90, 270]
    else:
        candidates = []
    best = (0, prepared, rec)
    for angle in candidates:
        rotated = rotate_right_angle(gray, angle)
        prep = preprocess(rotated, dpi, photo_check=photo_check)
        cand = recognise(prep.gray, settings, dpi=prep.dpi, want_pdf=want_pdf, workdir=workdir)
        if cand.quality > best[2].quality * 1.1:
            best = (angle, prep, cand)
    return best
