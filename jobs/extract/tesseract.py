"""Tesseract: the one place where it is called, its output parsed.

Two ways to reach it, with the same arguments and errors: the program through pytesseract, or
(``ocr_engine = library``, the default) the program's own library kept loaded in a helper process
(:mod:`jobs.extract.tessapi`), which reads a page without the program's ~0.2 s start. Either way
a crash or a hang cannot take the worker down and the timeout kills what hangs. Every call goes
through :func:`call` (pytesseract-style function, keyword arguments, our command, timeout and
environment), so tests count or fake the calls by patching that one name, and every failure
becomes :class:`~pipeline.errors.ToolMissing` or :class:`~pipeline.errors.ToolFailed` with a
message that carries neither stderr (it can echo paths) nor recognised text.

Images are handed over as the path of an uncompressed PGM in the job's scratch folder, the
cheapest form pytesseract accepts: given an array or a Pillow image it would encode a PNG (about
as long as a fifth of the recognition on a 300 dpi page) and Tesseract would decode it again.

A page needs words with boxes (TSV) *and* the invisible-text PDF layer, from one recognition: a
second run would double the OCR time. :func:`recognise` calls ``run_tesseract`` (what pytesseract's
``image_to_data`` is built on) for the TSV only, and builds the text layer from its words
(:mod:`jobs.extract.textlayer`); tesseract's own PDF renderer (4-12 % of its CPU) is asked for
only when the glyphless font it needs is not installed.
Orientation uses ``image_to_osd`` and the version ``get_tesseract_version``.
"""
from __future__ import annotations

import csv
import functools
import io
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import pytesseract
from pytesseract import pytesseract as _engine

from jobs.extract import tessapi, textlayer
from pipeline.errors import ConfigError, ToolFailed, ToolMissing
from pipeline.settings import Settings

log = logging.getLogger(__name__)

#: Extra ``-c`` settings for every recognition run (see :func:`recognise`).
RECOGNITION_CONFIG: list[str] = []

_LANGS_RE = re.compile(r"^[A-Za-z0-9_]+(\+[A-Za-z0-9_]+)*$")
_MISSING_DATA = ("Failed loading language", "Error opening data file")

# Recognition below these figures makes us suspect a wrongly oriented page.
_POOR_MEAN_CONFIDENCE = 60.0
_GOOD_WORD_CONFIDENCE = 60.0
# Words read below this confidence are left out of the page text, lines and words (they still
# count in the page's mean confidence, which drives orientation): on the 79 development
# receipts they are mostly noise read from logos, stamps, ruled lines and paper texture.
# Measured (bench/README-ocr.md): word F1 0.762 -> 0.777 and CER 0.434 -> 0.413 with psm 6.
MIN_WORD_CONFIDENCE = 20.0


# --------------------------------------------------------------------------------------------
# Starting the program
# --------------------------------------------------------------------------------------------

def check_languages(languages: str) -> str:
    """Validate the ``-l`` value: tesseract language codes joined by '+'."""
    if not _LANGS_RE.match(languages or ""):
        raise ConfigError("ocr_languages must be tesseract language codes joined by '+', e.g. eng+deu")
    return languages


def call(function: Callable[..., Any], settings: Settings, **kwargs: Any) -> Any:
    """Run one pytesseract ``function(**kwargs)`` with our command and thread limit.

    The single place that starts Tesseract (tests patch or count it). One OpenMP thread unless the
    operator says otherwise: Tesseract's threads spin on shared cores (measured on a 2-core
    machine, a 300 dpi page took 12 s wall with the default threads and 1.7 s with one); we
    parallelise across pages instead. pytesseract starts the program with this process's
    environment, hence the variable is set here, once, in the worker process.
    """
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    _engine.tesseract_cmd = settings.tesseract_cmd
    try:
        return function(**kwargs)
    except (_engine.TesseractNotFoundError, FileNotFoundError, PermissionError, NotADirectoryError):
        raise ToolMissing("tesseract is not installed or not executable") from None
    except _engine.TesseractError as exc:
        if any(marker in str(exc.message) for marker in _MISSING_DATA):
            raise ToolMissing("tesseract language data is missing for the configured ocr_languages") from None
        raise ToolFailed(f"tesseract exited with status {exc.status}") from None
    except RuntimeError as exc:  # pytesseract's timeout: the process was killed
        if "timeout" in str(exc).lower():
            raise ToolFailed(f"tesseract timed out after {settings.ocr_timeout:g} s") from None
        raise ToolFailed("tesseract failed") from None


@functools.lru_cache(maxsize=4)
def _version_for(cmd: str) -> str:
    return str(call(_engine.get_tesseract_version, Settings(tesseract_cmd=cmd)))


def tesseract_version(cmd: str = "tesseract") -> str:
    """The tesseract version string, e.g. ``5.3.0``; ``"missing"`` when not installed."""
    try:
        return _version_for(cmd)
    except (ToolMissing, ToolFailed):
        return "missing"
    except SystemExit:  # pytesseract exits on a version string it cannot parse
        return "unknown"


def write_pgm(gray: np.ndarray, path: Path) -> str:
    """Write the page as uncompressed PGM, or 1-bit PBM for a ``.pbm`` path (OpenCV thresholds
    at mid-grey; nothing to encode or decode); return its path."""
    if not cv2.imwrite(str(path), gray):
        raise ToolFailed("could not write the page image for tesseract")
    return str(path)


# --------------------------------------------------------------------------------------------
# Recognition
# --------------------------------------------------------------------------------------------

@dataclass
class Recognition:
    """What one tesseract run produced for one image: text built from its words, with offsets."""

    text: str
    lines: list[dict[str, Any]]
    words: list[dict[str, Any]]
    mean_confidence: float | None
    pdf: bytes | None = None
    languages: str = ""  # the -l value it was read with

    @property
    def quality(self) -> float:
        """Score for choosing between orientations: confident alphanumeric characters in words
        that lie horizontally (tesseract can read a sideways line, but then the page, its boxes
        and the searchable PDF are still sideways)."""
        total = 0.0
        for w in self.words:
            if w["confidence"] >= _GOOD_WORD_CONFIDENCE and not _is_vertical(w):
                total += sum(ch.isalnum() for ch in w["text"])
        return total

    def looks_poor(self) -> bool:
        """Whether the page may be sideways or upside down (few, unsure or vertical words)."""
        if not self.words:
            return True
        return self.mostly_vertical() or (self.mean_confidence or 0.0) < _POOR_MEAN_CONFIDENCE

    def mostly_vertical(self) -> bool:
        """Whether most words of three or more characters have upright boxes (a sideways page)."""
        long_words = [w for w in self.words if len(w["text"]) >= 3]
        return bool(long_words) and sum(_is_vertical(w) for w in long_words) > len(long_words) / 2


def _is_vertical(word: dict[str, Any]) -> bool:
    x0, y0, x1, y1 = word["bbox"]
    return len(word["text"]) >= 2 and (y1 - y0) > 1.5 * (x1 - x0)


def parse_tsv(tsv: str, min_confidence: float = 0.0) -> Recognition:
    """Turn tesseract TSV into page text, lines and words with offsets into that text.

    Words below ``min_confidence`` are dropped from the text, lines and words, but not from the
    mean confidence (a page of unsure noise must still look poor).

    Lines are joined by "\\n" and blocks separated by an empty line, so that downstream entity
    offsets can be mapped back to boxes through each word's ``offset``.
    """
    rows = csv.reader(io.StringIO(tsv), delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(rows, None)
    if not header:
        return Recognition("", [], [], None)
    col = {name: i for i, name in enumerate(header)}
    grouped: dict[tuple[int, int, int], list[dict[str, Any]]] = {}
    order: list[tuple[int, int, int]] = []
    confidences: list[float] = []
    for row in rows:
        if len(row) < len(header) or row[col["level"]] != "5":
            continue
        text = row[col["text"]].strip()
        conf = float(row[col["conf"]])
        if not text or conf < 0:
            continue
        confidences.append(conf)
        if conf < min_confidence:
            continue
        left, top = int(row[col["left"]]), int(row[col["top"]])
        width, height = int(row[col["width"]]), int(row[col["height"]])
        key = (int(row[col["block_num"]]), int(row[col["par_num"]]), int(row[col["line_num"]]))
        if key not in grouped:
            grouped[key] = []
            order.append(key)
        grouped[key].append({
            "text": text,
            "bbox": [left, top, left + width, top + height],
            "confidence": round(conf, 2),
        })
    result = _assemble(order, grouped)
    if min_confidence > 0.0:
        result.mean_confidence = round(float(np.mean(confidences)), 2) if confidences else None
    return result


def _assemble(order: list[tuple[int, int, int]], grouped: dict[tuple[int, int, int], list[dict[str, Any]]]) -> Recognition:
    parts: list[str] = []
    lines: list[dict[str, Any]] = []
    words: list[dict[str, Any]] = []
    pos = 0
    prev_block: int | None = None
    for key in order:
        line_words = grouped[key]
        if parts:
            sep = "\n\n" if key[0] != prev_block else "\n"
            parts.append(sep)
            pos += len(sep)
        prev_block = key[0]
        line_start = pos
        for i, w in enumerate(line_words):
            if i:
                parts.append(" ")
                pos += 1
            w["offset"] = pos
            parts.append(w["text"])
            pos += len(w["text"])
            words.append(w)
        boxes = np.array([w["bbox"] for w in line_words])
        line_text = " ".join(w["text"] for w in line_words)
        lines.append({
            "text": line_text,
            "bbox": [int(boxes[:, 0].min()), int(boxes[:, 1].min()), int(boxes[:, 2].max()), int(boxes[:, 3].max())],
            "confidence": round(float(np.mean([w["confidence"] for w in line_words])), 2),
            "offset": line_start,
        })
    mean = round(float(np.mean([w["confidence"] for w in words])), 2) if words else None
    return Recognition("".join(parts), lines, words, mean)


def recognise(gray: np.ndarray, settings: Settings, *, dpi: int, want_pdf: bool, workdir: Path,
              languages: str | None = None, psm: int = 3, bilevel: bool = False) -> Recognition:
    """One tesseract run on a grayscale array: TSV, and with ``want_pdf`` a text-only PDF built
    from its words (:mod:`jobs.extract.textlayer`).

    ``languages`` is the ``-l`` value chosen for the page (:mod:`jobs.extract.languages`); None
    reads with the pinned ``ocr_languages``. ``psm`` is tesseract's page segmentation mode:
    3 (full layout analysis) by default, 6 (one block of text) for narrow single-column pages
    such as receipts (:func:`jobs.extract.preprocess.segmentation_mode`). ``bilevel``: the
    array holds only 0 and 255 and is handed over as a 1-bit PBM (tesseract then skips its
    thresholding and grey-level work).
    """
    langs = check_languages(languages or settings.ocr_languages)
    image = write_pgm(gray, workdir / ("page.pbm" if bilevel else "page.pgm"))
    base = workdir / "out"
    for stale in ("out.tsv", "out.pdf"):
        (workdir / stale).unlink(missing_ok=True)
    config = ["--psm", str(int(psm)), "--dpi", str(int(dpi)), "-c", "tessedit_create_tsv=1", *RECOGNITION_CONFIG]
    if psm == 6:
        # psm 6 is chosen only for pages without a solid dark area (preprocess.segmentation_mode),
        # so there is no white-on-dark text to find: skip tesseract's re-recognition of
        # low-confidence words inverted (measured in bench/README-ocr.md).
        config += ["-c", "tessedit_do_invert=0"]
    # Our own text layer (jobs.extract.textlayer) from the TSV words replaces tesseract's PDF
    # renderer (4-12 % of its CPU per page); the renderer stays only as the fallback when the
    # glyphless font is not installed.
    renderer = want_pdf and textlayer.glyphless_font() is None
    if renderer:
        config += ["-c", "textonly_pdf=1"]
    runner = tessapi.run_tesseract if tessapi.usable(settings) else _engine.run_tesseract
    call(runner, settings, input_filename=image, output_filename_base=str(base),
         extension="pdf" if renderer else "", lang=langs, config=" ".join(config), timeout=settings.ocr_timeout)
    result = parse_tsv(read_text_file(workdir / "out.tsv"), MIN_WORD_CONFIDENCE)
    if renderer:
        result.pdf = (workdir / "out.pdf").read_bytes()
    elif want_pdf:
        result.pdf = textlayer.build_text_layer(result.words, result.lines, gray.shape[1], gray.shape[0], dpi)
    result.languages = langs
    return result


def read_text_file(path: Path) -> str:
    """Read tesseract's UTF-8 output; a missing file is a tool failure, not a crash."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise ToolFailed("tesseract produced no output") from None


_osd_warned = False  # log the missing-OSD-data warning once per process
_OSD_ROTATE = re.compile(r"Rotate:\s*(\d+)")
_OSD_CONF = re.compile(r"Orientation confidence:\s*([\d.]+)")
_OSD_SCRIPT = re.compile(r"Script:\s*(\w+)")
_OSD_SCRIPT_CONF = re.compile(r"Script confidence:\s*([\d.]+)")


@dataclass(frozen=True)
class Osd:
    """What one OSD run says about a page: the clockwise rotation that makes it upright, and its
    script (``Latin``, ``Han``, ``Japanese``, ``Hangul``...), each with OSD's confidence."""

    rotation: int
    confidence: float
    script: str | None = None
    script_confidence: float = 0.0


def detect_orientation(gray: np.ndarray, settings: Settings, *, workdir: Path) -> Osd | None:
    """Clockwise rotation (0/90/180/270) that makes the page upright, and the page's script.

    None when OSD cannot decide (sparse pages: "Too few characters"), which is not an error.
    """
    image = write_pgm(gray, workdir / "osd.pgm")
    try:
        osd = tessapi.image_to_osd if tessapi.usable(settings) else pytesseract.image_to_osd
        out = call(osd, settings, image=image, lang="osd", timeout=settings.ocr_timeout)
    except ToolFailed:
        return None
    except ToolMissing:
        global _osd_warned
        if not _osd_warned:
            _osd_warned = True
            log.warning("tesseract 'osd' data is not installed; page orientation falls back to trials")
        return None
    rot, conf = _OSD_ROTATE.search(out), _OSD_CONF.search(out)
    if not rot or not conf:
        return None
    script, script_conf = _OSD_SCRIPT.search(out), _OSD_SCRIPT_CONF.search(out)
    return Osd(int(rot.group(1)) % 360, float(conf.group(1)), script.group(1) if script else None,
               float(script_conf.group(1)) if script_conf else 0.0)
