"""OCR of one page image: clean it up, recognise it, turn it upright when it reads poorly.

The parts: :mod:`jobs.extract.preprocess` (OpenCV clean-up), :mod:`jobs.extract.tesseract` (the
one place Tesseract is started, through pytesseract, and its output parsed) and
:mod:`jobs.extract.orientation` (OSD and rotation trials).

Preprocessing order (each step is cheap and guarded so that a clean flat scan goes through
practically unchanged):

1. grayscale (alpha flattened onto white),
2. perspective correction of a photographed page (only when a paper-bright quadrilateral stands
   out against a darker background; a curved book page filling the frame is left alone),
3. illumination/shadow normalisation (divide by a large-kernel background estimate, floored so
   white text on dark bars survives),
4. one connected-component pass measuring the glyph height, the speckle share and the baselines
   (ink by Otsu's threshold; where that finds only a dark pen note or scanner edge, by the
   triangle threshold, and the faint print's contrast is stretched so tesseract sees it too),
5. deskew of small angles by projection profiles of those baselines,
6. resolution normalisation from the measured text height (small print is upscaled to a ~300 dpi
   equivalent; huge print is downscaled, which saves time at no cost in accuracy),
7. light denoising, only when the page is measurably speckled,
8. orientation (90/180/270): first from the glyph geometry measured in step 4, before any
   recognition (glyph side edges lining up means vertical lines; baselines line up more sharply
   than top lines, which gives the direction when the text has lower-case letters), so a turned
   page pays one tesseract run; then, only when the recognition still looks poor (low confidence,
   or word boxes standing upright), the other direction of an undecided axis, tesseract's OSD,
   or trials scored by confident horizontal characters (sparse pages OSD cannot decide).

Languages (``ocr_languages=auto``, :mod:`jobs.extract.languages`): the first pass reads with the
region's first Latin language; OSD's script (when orientation consulted it) or the first pass's
function words choose another listed traineddata, and only then is the page read again.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from jobs.extract import languages as lang
from jobs.extract.orientation import fix_orientation
from jobs.extract.preprocess import Prepared, preprocess, to_gray
from jobs.extract.tesseract import Recognition, recognise
from pipeline.errors import ToolFailed
from pipeline.settings import Settings


# A re-read in the language the function words point to is kept unless its mean word confidence
# falls this far below the first pass's (a misled guess reads worse, not the same).
_CONFIDENCE_SLACK = 3.0
# A page whose glyph geometry shows horizontal lines is taken as upright, without OSD, when its
# first reading is at least this confident (or at least _MIN_SCRIPT_CONFIDENCE when the geometry
# also named the baseline side as the bottom): measured on the 79 development receipts turned by
# 180 degrees, an upside-down reading scores at most 42.6 (psm 6; 36-42 with psm 3), and a page in
# another script (a Chinese page read in English) 10-32; faded upright receipts score 44-61.
_UPRIGHT_CONFIDENCE = 45.0
_MIN_SCRIPT_CONFIDENCE = 35.0


@dataclass
class OcrPage:
    """One OCR'd page: recognition in the prepared image's pixel space, plus provenance."""

    recognition: Recognition
    gray: np.ndarray  # the image the boxes refer to (becomes the searchable PDF's picture)
    dpi: int
    rotation: int  # clockwise degrees applied (orientation only)
    skew: float
    scale: float
    perspective: bool
    timings: dict[str, float]

    @property
    def width(self) -> int:
        return int(self.gray.shape[1])

    @property
    def height(self) -> int:
        return int(self.gray.shape[0])


def _one_opencv_thread() -> None:
    """OpenCV's own worker threads, like Tesseract's OpenMP ones, spin on shared cores: measured
    on 5 pages, 11 % more CPU of this process for no gain (pages are parallelised across
    processes instead). Set per worker process, where OCR runs."""
    if cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)


def ocr_image(image: Image.Image, settings: Settings, *, dpi: float | None, want_pdf: bool = True,
              photo_check: bool = True) -> OcrPage:
    """Preprocess and recognise one page image; orientation is fixed only when needed."""
    _one_opencv_thread()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    gray = to_gray(image)
    prepared = preprocess(gray, dpi, photo_check=photo_check, orient=True)
    timings["preprocess"] = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="medintake-ocr-") as tmp:
        workdir = Path(tmp)
        t0 = time.perf_counter()
        rec = recognise(prepared.gray, settings, dpi=prepared.dpi, want_pdf=want_pdf, workdir=workdir,
                        languages=lang.first_pass(settings), psm=prepared.psm, bilevel=prepared.bilevel)
        rotation = prepared.rotation
        if rec.looks_poor() and not _upright_enough(prepared, rec):
            rotation, prepared, rec = fix_orientation(gray, prepared, rec, settings, dpi, want_pdf, workdir,
                                                       photo_check)
        better = lang.latin_guess(rec.text, rec.languages, settings)
        if better:
            again = recognise(prepared.gray, settings, dpi=prepared.dpi, want_pdf=want_pdf, workdir=workdir,
                              languages=better, psm=prepared.psm, bilevel=prepared.bilevel)
            if (again.mean_confidence or 0.0) >= (rec.mean_confidence or 0.0) - _CONFIDENCE_SLACK:
                rec = again
        timings["ocr"] = time.perf_counter() - t0
    return OcrPage(rec, prepared.gray, prepared.dpi, rotation, prepared.skew, prepared.scale,
                   prepared.perspective, timings)


def _upright_enough(prepared: Prepared, rec: Recognition) -> bool:
    """Whether a poor first reading is just a hard page (faded receipt), not a wrong way up: the
    glyph geometry does not say the lines run up and down, the words lie flat, and the confidence
    is above what upside-down or other-script pages reach. Saves OSD and trials on such pages."""
    turn = prepared.turn
    if turn is None or turn.vertical or not rec.words or rec.mostly_vertical():
        return False
    confidence = rec.mean_confidence or 0.0
    if turn.horizontal and turn.sure and turn.rotation == 0 and prepared.rotation == 0:
        return confidence >= _MIN_SCRIPT_CONFIDENCE
    return confidence >= _UPRIGHT_CONFIDENCE


def encode_jpeg(gray: np.ndarray, quality: int = 70) -> bytes:
    """JPEG bytes of the page picture for the searchable PDF (small, and scans are photos anyway)."""
    ok, buf = cv2.imencode(".jpg", gray, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ToolFailed("could not encode the page image")
    return buf.tobytes()
