"""Which way is up, when the glyph geometry's call (:func:`jobs.extract.preprocess.text_turn`,
made before the first recognition) was not enough: Tesseract's OSD, else trials.

An upright page, and a turned page whose direction the geometry told, cost exactly one
recognition: orientation is looked at again only when the result looks wrong (low confidence, or word boxes standing upright). OSD names the rotation when it can;
when it cannot decide (sparse pages) the rotations are tried and scored by confident horizontal
characters, and a dense page whose words stand upright is tried at 90 and 270 degrees.

OSD also names the page's script; with ``ocr_languages=auto`` that answer chooses the traineddata
(:mod:`jobs.extract.languages`): a Chinese, Japanese or Korean page reads as garbage in the
first pass, so it reaches here anyway, and is read again, upright, with its script's language.
The new reading is kept only when it scores better, so a wrong script guess costs one call.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from jobs.extract import languages as lang
from jobs.extract.preprocess import Prepared, preprocess, rotate_right_angle
from jobs.extract.tesseract import Recognition, detect_orientation, recognise
from pipeline.settings import Settings

__all__ = ["fix_orientation", "rotate_right_angle"]


def fix_orientation(gray: np.ndarray, prepared: Prepared, rec: Recognition, settings: Settings,
                    dpi: float | None, want_pdf: bool, workdir: Path,
                    photo_check: bool) -> tuple[int, Prepared, Recognition]:
    """Turn a page that read poorly; returns (clockwise rotation of ``gray``, page, reading).

    ``prepared`` may already be turned by ``prepared.rotation`` (the glyph geometry's call before
    the first recognition). When that call named the axis but not the direction, the opposite
    direction is tried first: one recognition, no OSD. Otherwise OSD is asked which way is up
    (and, unpinned, which script); if it cannot tell and the page is small, each rotation is
    tried. One OSD call per page at most; a candidate is kept only when it scores clearly better.
    """
    base = prepared.rotation
    best = (base, prepared, rec)
    tried = {base}

    def attempt(rotation: int, languages: str | None) -> None:
        nonlocal best
        rotation %= 360
        if rotation in tried:
            return
        tried.add(rotation)
        prep = preprocess(rotate_right_angle(gray, rotation), dpi, photo_check=photo_check, bilevel=prepared.bilevel)
        prep.rotation = rotation
        cand = recognise(prep.gray, settings, dpi=prep.dpi, want_pdf=want_pdf, workdir=workdir, languages=languages,
                         psm=prep.psm, bilevel=prep.bilevel)
        if cand.quality > best[2].quality * 1.1:
            best = (rotation, prep, cand)

    turn = prepared.turn
    if base and turn is not None and not turn.sure:
        attempt(base + 180, rec.languages or None)
        if not best[2].looks_poor():
            return best
    current = best[1]
    osd = detect_orientation(current.gray, settings, workdir=workdir)
    script_lang = lang.for_script(osd.script if osd else None, settings)
    languages = script_lang or rec.languages or None
    relang = script_lang is not None and script_lang != rec.languages
    if osd is not None:
        candidates = [osd.rotation] if (osd.rotation or relang) else []
    elif len(best[2].words) <= 40:
        candidates = [180, 90, 270]
    elif best[2].mostly_vertical():
        candidates = [90, 270]
    else:
        candidates = []
    start = best[0]
    for angle in candidates:
        if angle == 0:  # a re-read in the script's language, same orientation
            cand = recognise(current.gray, settings, dpi=current.dpi, want_pdf=want_pdf, workdir=workdir,
                             languages=languages, psm=current.psm, bilevel=current.bilevel)
            if cand.quality > best[2].quality * 1.1:
                best = (start, current, cand)
        else:
            attempt(start + angle, languages)
    return best
