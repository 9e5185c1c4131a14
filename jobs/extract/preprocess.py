"""Page clean-up before recognition (OpenCV on grayscale uint8 arrays).

Steps 1-7 of :mod:`jobs.extract.ocr`'s order: grayscale, perspective of a photographed page,
illumination, one connected-component measurement (glyph height, speckle, baselines, and from
the same glyph boxes the page's turn and text width), deskew, resolution normalisation from the
measured text height, and light denoising. Each step is cheap and guarded, so a clean flat scan
goes through practically unchanged (evenly lit paper skips the illumination division; a 1-bit
page stays 1-bit).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image

from jobs.extract.dewarp import dewarp_if_curved

# Resolution normalisation targets, in pixels of median connected-component height
# (a mix of x-height and cap height: ~25 px is 10-11 pt text at 300 dpi). Measured on receipts:
# upscaling to 28 px bought ~1 point of word recall for ~10% more CPU; 22 px is the compromise.
_TARGET_TEXT_PX = 22.0
_MIN_TEXT_PX = 14.0
_MAX_TEXT_PX = 80.0
_MAX_UPSCALE = 4.0
_MAX_OCR_PIXELS = 60_000_000
# Illumination: shadows down to this share of the paper's brightness are evened out.
_BACKGROUND_FLOOR = 0.45
# A page whose estimated paper brightness is at least this everywhere needs no normalisation.
_CLEAN_PAPER = 245
# Below this a rotation is not worth its full-size warp (0.4 degrees still helped UNLV pages).
_MIN_SKEW = 0.2
# Turned pages from the glyph geometry (see :func:`text_turn`): lines are called vertical when
# the glyphs' side edges line up this many times more sharply than their bottoms and tops
# (measured on the 8 test pages and 79 receipts at 0/90/180/270 degrees: turned pages 2.8-15x,
# upright ones at most 1.03x), and a direction is trusted at this ratio of baseline to top-line
# sharpness (no wrong call at 1.35 on 310 receipt orientations; ~10 % wrong at 1.0).
_TURNED_RATIO = 2.0
_DIRECTION_RATIO = 1.35
_MIN_TURN_GLYPHS = 30
# Fewer glyph-sized components than this under Otsu's threshold: try the triangle threshold
# (measure_text). The 79 development receipts and 10 test pages find 263-3,641 under Otsu except
# the two with a dark pen note or edge on faded print (27 and 45).
_FEW_GLYPHS = 100
# Pages whose text is at most this many glyph heights wide are one column (receipts measure 4-50,
# the tesseract test paragraphs 18-34, two-column UNLV pages 104-135, an A4 letter ~80):
# tesseract reads them as one block (psm 6), skipping its column and region analysis.
_NARROW_TEXT_GLYPHS = 60.0
NARROW_PSM = 6
# Share of the page that solid dark regions must cover to keep full layout analysis (psm 3): the
# portal screenshot's header bar covers 0.13; logos and stamps on the 79 development receipts at
# most 0.041, and only 1 of them above 0.03 (at 0.01, 6 receipts lost psm 6: F1 0.787 -> 0.780).
_DARK_AREA_SHARE = 0.03


def to_gray(image: Image.Image) -> np.ndarray:
    """Grayscale uint8 array; transparency is flattened onto white (screenshots, PNG logos)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        hi = arr.max() or 1.0
        return np.ascontiguousarray(np.clip(arr * 255.0 / hi, 0, 255).astype(np.uint8))
    if image.mode == "LAB":  # L* is the lightness: the grey OCR wants (Pillow has no LAB -> L)
        image = image.getchannel("L")
    if image.mode != "L":
        try:
            image = image.convert("L")
        except ValueError:  # a mode Pillow cannot take straight to L (e.g. I;16 variants, HSV)
            image = image.convert("RGB").convert("L")
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def is_bilevel(gray: np.ndarray) -> bool:
    """Whether a page holds only black and white (fax, 1-bit TIFF scans): one histogram."""
    # A strided sample answers for almost every grey page at ~1/60 of a full histogram's cost
    # (12 ms on an 8.7 MP receipt); only a sample of pure black and white needs the full count.
    sample = gray[::8, ::8]
    if np.any((sample != 0) & (sample != 255)):
        return False
    hist = cv2.calcHist([gray], [0], None, [256], [0, 256]).ravel()
    return float(hist.sum() - hist[0] - hist[255]) == 0.0


def _downscale(gray: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    h, w = gray.shape[:2]
    f = min(1.0, max_side / max(h, w))
    if f >= 1.0:
        return gray, 1.0
    return cv2.resize(gray, (max(1, int(w * f)), max(1, int(h * f))), interpolation=cv2.INTER_AREA), f


def _order_quad(pts: np.ndarray) -> np.ndarray:
    """Corners as top-left, top-right, bottom-right, bottom-left."""
    pts = pts.reshape(4, 2).astype(np.float32)
    s, d = pts.sum(axis=1), np.diff(pts, axis=1).ravel()
    return np.array([pts[np.argmin(s)], pts[np.argmin(d)], pts[np.argmax(s)], pts[np.argmax(d)]], dtype=np.float32)


def find_page_quad(gray: np.ndarray) -> np.ndarray | None:
    """The photographed page's corners (full-resolution), or None for a flat scan.

    Guards, because cropping a scan to a table border would lose text: the quadrilateral must be
    convex, cover 20-97% of the frame, and the paper inside must be clearly brighter than what
    surrounds it (a desk, not more paper).
    """
    small, f = _downscale(gray, 700)
    blur = cv2.GaussianBlur(small, (5, 5), 0)
    edges = cv2.Canny(blur, 40, 120)
    edges = cv2.dilate(edges, np.ones((3, 3), np.uint8))
    contours, _ = cv2.findContours(edges, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    area_img = float(small.shape[0] * small.shape[1])
    for cnt in sorted(contours, key=cv2.contourArea, reverse=True)[:5]:
        hull = cv2.convexHull(cnt)
        approx = cv2.approxPolyDP(hull, 0.02 * cv2.arcLength(hull, True), True)
        if len(approx) != 4 or not cv2.isContourConvex(approx):
            continue
        ratio = cv2.contourArea(approx) / area_img
        if not 0.2 <= ratio <= 0.97:
            continue
        mask = np.zeros(small.shape, np.uint8)
        cv2.fillConvexPoly(mask, approx.reshape(4, 2), 255)
        inside = float(small[mask > 0].mean())
        outside_px = small[mask == 0]
        if outside_px.size == 0 or inside - float(outside_px.mean()) < 40:
            continue
        return _order_quad(approx) / f
    return None


def correct_perspective(gray: np.ndarray) -> tuple[np.ndarray, bool]:
    """Warp a photographed page to a flat rectangle; flat scans are returned unchanged."""
    quad = find_page_quad(gray)
    if quad is None:
        return gray, False
    tl, tr, br, bl = quad
    width = int(max(np.linalg.norm(tr - tl), np.linalg.norm(br - bl)))
    height = int(max(np.linalg.norm(bl - tl), np.linalg.norm(br - tr)))
    if width < 100 or height < 100:
        return gray, False
    dst = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(quad, dst)
    warped = cv2.warpPerspective(gray, matrix, (width, height), flags=cv2.INTER_CUBIC,
                                 borderMode=cv2.BORDER_REPLICATE)
    return warped, True


def paper_background(gray: np.ndarray) -> tuple[np.ndarray, float]:
    """The paper's own brightness on a reduced copy (and the copy's scale), floored.

    A grey-level closing (max filter) with a kernel much wider than any stroke, smoothed. The
    floor: a large dark area (a coloured header bar, a black table head) is not paper in shadow;
    dividing by its own level would turn it and any white text on it into plain white. Kept on
    the reduced copy, in uint8: the full-size float round trip cost more than the division itself.
    """
    small, f = _downscale(gray, 600)
    k = max(9, int(round(min(small.shape) / 25)) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    bg = cv2.morphologyEx(small, cv2.MORPH_CLOSE, kernel)
    bg = cv2.GaussianBlur(bg, (0, 0), k / 2)
    paper = float(np.percentile(small, 90))
    floor = int(min(255.0, max(1.0, round(paper * _BACKGROUND_FLOOR))))
    return cv2.max(bg, floor), f


def evenly_lit(background: np.ndarray) -> bool:
    """White paper lit evenly everywhere (scans, renderings): dividing by the background would
    change no grey level by more than 255 / _CLEAN_PAPER.

    Such a page is also flat and shows no desk around it: a photographed curved page is shaded
    over its bend and a page photographed on a desk has the desk in its background (measured:
    the curved photos of bench/data/curved 81-96, clean receipts and scans 245-255), so the
    dewarp and perspective checks are skipped for it (:func:`preprocess`).
    """
    return int(background.min()) >= _CLEAN_PAPER


def normalise_illumination(gray: np.ndarray, background: tuple[np.ndarray, float] | None = None) -> np.ndarray:
    """Flatten shadows and uneven lighting: divide by the paper's own brightness.

    ``background``: :func:`paper_background` of this very array when the caller has it already.
    On an evenly lit white page nothing is divided and the page itself is returned.
    """
    bg, f = background if background is not None else paper_background(gray)
    if evenly_lit(bg):
        return gray
    if f < 1.0:
        bg = cv2.resize(bg, (gray.shape[1], gray.shape[0]), interpolation=cv2.INTER_LINEAR)
    return cv2.divide(gray, bg, scale=255)


@dataclass
class TextStats:
    """Connected-component measurements of the ink on a page."""

    median_height: float | None  # area-weighted median height of glyph-like components
    speckle_ratio: float
    components: int
    baselines: np.ndarray | None = None  # (x centre, bottom) of glyph-sized components
    boxes: np.ndarray | None = None  # (left, top, width, height) of the same components
    # Set when only the triangle threshold found the print (see measure_text): the grey level
    # from which the page's contrast is stretched so that tesseract's own Otsu sees the print.
    faint_ink: float | None = None


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cum = np.cumsum(weights[order], dtype=np.float64)
    return float(values[order][np.searchsorted(cum, cum[-1] / 2.0)])


def measure_text(gray: np.ndarray) -> TextStats:
    """Glyph height (resolution normalisation), speckle share (denoising), baselines (deskew).

    The height is a median weighted by ink area: on photos, paper texture and show-through make
    hundreds of tiny components that would otherwise outvote the letters.

    Ink is separated from paper by Otsu's threshold, except where that finds almost no glyphs:
    a faded thermal receipt with a pen note or a black scanner edge has two inks, and Otsu splits
    the dark one from faint print plus paper (a development receipt: 27 glyphs, all handwriting,
    so its size, resolution and layout were guessed from the note and tesseract read nothing).
    The triangle threshold, which cuts the paper peak off a long ink tail, then finds the print.
    """
    otsu, binary = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)
    stats = _glyph_stats(binary, gray.shape[0])
    if stats.boxes is None or len(stats.boxes) < _FEW_GLYPHS:
        _, faint = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY_INV | cv2.THRESH_TRIANGLE)
        other = _glyph_stats(faint, gray.shape[0])
        found = 0 if stats.boxes is None else len(stats.boxes)
        if other.boxes is not None and len(other.boxes) >= max(_FEW_GLYPHS, 3 * found):
            other.faint_ink = _print_level(gray, otsu)
            stats = other
    return stats


def _print_level(gray: np.ndarray, dark_split: float) -> float | None:
    """Typical grey of faint print on a page where Otsu split off a darker ink: Otsu again on
    the lighter class (print + paper) separates print from paper; the print's median is the
    level :func:`stretch_faint` maps to black. Independent of how much dark ink there is."""
    lighter = gray[gray > dark_split]
    if lighter.size < 16:
        return None
    split, _ = cv2.threshold(lighter.reshape(1, -1), 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    faint = lighter[lighter <= split]
    return float(np.median(faint)) if faint.size else None


def stretch_faint(gray: np.ndarray, stats: TextStats) -> np.ndarray:
    """Faint print made dark: grey levels at or below ``stats.faint_ink`` become black, the
    paper stays white. Tesseract thresholds the page again with Otsu, which on such a page splits
    the pen note from print-plus-paper as ours did (the receipt above: 5 words read instead of
    141). A page whose print Otsu finds comes back unchanged."""
    level = stats.faint_ink
    if level is None or level >= 250:
        return gray
    lut = np.clip((np.arange(256, dtype=np.float32) - level) * 255.0 / (255.0 - level), 0, 255)
    return cv2.LUT(gray, lut.astype(np.uint8))


def _glyph_stats(binary: np.ndarray, page_height: int) -> TextStats:
    """:class:`TextStats` of one ink mask (white ink on black)."""
    # Grana's block-based labelling: the same components and statistics as the default
    # algorithm, ~1.5-2x faster single-threaded (40 -> 27 ms on an 8.7 MP receipt).
    n, _, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(binary, 8, cv2.CV_32S, cv2.CCL_GRANA)
    if n <= 1:
        return TextStats(None, 0.0, 0)
    st = stats[1:]
    areas, widths, heights = st[:, cv2.CC_STAT_AREA], st[:, cv2.CC_STAT_WIDTH], st[:, cv2.CC_STAT_HEIGHT]
    speckle = float(np.count_nonzero(areas <= 3)) / len(areas)
    glyph = (heights >= 5) & (heights <= page_height / 8) & (widths <= heights * 4) & (areas >= 8)
    if np.count_nonzero(glyph) < 5:
        return TextStats(None, speckle, int(len(areas)))
    height = _weighted_median(heights[glyph].astype(np.float64), areas[glyph].astype(np.float64))
    sized = glyph & (heights >= height * 0.5) & (heights <= height * 2.0)
    sel = st[sized]
    baselines = np.stack([sel[:, cv2.CC_STAT_LEFT] + sel[:, cv2.CC_STAT_WIDTH] / 2.0,
                          (sel[:, cv2.CC_STAT_TOP] + sel[:, cv2.CC_STAT_HEIGHT]).astype(np.float64)], axis=1)
    boxes = sel[:, :4].astype(np.float64)
    return TextStats(height, speckle, int(len(areas)), baselines, boxes)


def segmentation_mode(stats: TextStats, gray: np.ndarray | None = None) -> int:
    """Tesseract's page segmentation mode for a page: 6 (one uniform block) when its text is
    narrow and the page has no solid dark area, else 3 (full layout analysis).

    Measured on the 79 development receipts (bench/README-ocr.md): psm 6 reads them at the same
    word F1 as psm 3 for 11 % less CPU, and rescues receipts whose layout analysis finds no text
    at all; on two-column pages it would read across the columns (CER 0.05 -> 0.78), hence the
    width gate. Tesseract finds white-on-dark text (a portal screenshot's coloured header bar)
    only through its block analysis: in one uniform block the bar's words are lost, hence the
    dark-area gate.
    """
    boxes = stats.boxes
    if boxes is None or len(boxes) < _MIN_TURN_GLYPHS or not stats.median_height:
        return 3
    left = float(np.percentile(boxes[:, 0], 1))
    right = float(np.percentile(boxes[:, 0] + boxes[:, 2], 99))
    if (right - left) / stats.median_height > _NARROW_TEXT_GLYPHS:
        return 3
    if gray is not None and has_dark_area(gray, stats.median_height):
        return 3
    return NARROW_PSM


def has_dark_area(gray: np.ndarray, glyph_height: float) -> bool:
    """Whether the page holds a solid dark region (header bar, table head, inverted box) of at
    least :data:`_DARK_AREA_SHARE` of its area: dark pixels that survive an opening wider than
    a glyph, which removes the strokes of ordinary dark-on-light text."""
    small, f = _downscale(gray, 400)
    paper = float(np.percentile(small, 90))
    dark = (small < paper * 0.6).astype(np.uint8)
    k = max(3, int(round(glyph_height * f * 1.5)) | 1)
    solid = cv2.morphologyEx(dark, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (k, k)))
    return float(solid.mean()) >= _DARK_AREA_SHARE


def rotate_right_angle(gray: np.ndarray, degrees_cw: int) -> np.ndarray:
    """Rotate by a multiple of 90 degrees clockwise (lossless)."""
    codes = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}
    degrees_cw %= 360
    return gray if degrees_cw == 0 else cv2.rotate(gray, codes[degrees_cw])


@dataclass(frozen=True)
class Turn:
    """What the glyph geometry says about a page's orientation, before any recognition.

    ``rotation`` is the clockwise turn that makes it upright (0/90/180/270); ``sure`` says
    whether the direction (not just the axis) was clear.
    """

    rotation: int
    vertical: bool  # text lines run up and down (the page is turned by 90 or 270 degrees)
    horizontal: bool  # text lines clearly run across (0 or 180 degrees)
    sure: bool


def text_turn(stats: TextStats) -> Turn | None:
    """Which way the text runs, from the glyph boxes already measured (milliseconds, no OCR).

    Letters of a line share a baseline, so in an upright page the glyphs' bottom edges line up in
    rows (the row histogram is sharp) while their left edges are spread along the lines. A page
    turned by 90 degrees shows it the other way round, with the baseline on the left (turned
    clockwise) or on the right side. Baselines line up better than top lines (ascenders and
    capitals stick out above the x-height; fewer letters descend), which tells 0 from 180 and 90
    from 270 when the text has lower-case letters; all-capital receipts stay undecided
    (``sure=False``). A few degrees of skew are allowed for. None when there are too few glyphs.
    """
    boxes = stats.boxes
    if boxes is None or len(boxes) < _MIN_TURN_GLYPHS:
        return None
    x0, y0, w, h = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    bin_px = max(1.0, (stats.median_height or 6.0) / 6.0)
    angles = np.arange(-5.0, 5.01, 1.0)

    def sharp(along: np.ndarray, edge: np.ndarray) -> float:
        return float(_profile_scores(along, edge, angles, bin_px).max())

    cx, cy = x0 + w / 2.0, y0 + h / 2.0
    bottom, top = sharp(cx, y0 + h), sharp(cx, y0)
    left, right = sharp(cy, x0), sharp(cy, x0 + w)
    across, upright = max(bottom, top), max(left, right)
    if upright > _TURNED_RATIO * across:  # lines run vertically
        # Baseline on the left: the page was turned clockwise; turn it back (270 clockwise).
        rotation = 270 if left >= right else 90
        sure = max(left, right) >= _DIRECTION_RATIO * max(1e-9, min(left, right))
        return Turn(rotation, True, False, sure)
    horizontal = across > _TURNED_RATIO * upright
    rotation = 0 if bottom >= top else 180
    sure = max(bottom, top) >= _DIRECTION_RATIO * max(1e-9, min(bottom, top))
    return Turn(rotation, False, horizontal, sure)


def resolution_factor(stats: TextStats, shape: tuple[int, ...]) -> float:
    """Scale factor that brings the text to a height tesseract reads best (or 1.0)."""
    h = stats.median_height
    if h is None:
        return 1.0
    if h < _MIN_TEXT_PX:
        f = min(_MAX_UPSCALE, _TARGET_TEXT_PX / h)
    elif h > _MAX_TEXT_PX:
        f = _TARGET_TEXT_PX * 1.5 / h
    else:
        return 1.0
    pixels = shape[0] * shape[1] * f * f
    if pixels > _MAX_OCR_PIXELS:
        f = (_MAX_OCR_PIXELS / (shape[0] * shape[1])) ** 0.5
    return f if abs(f - 1.0) > 0.05 else 1.0


def rescale(gray: np.ndarray, factor: float) -> np.ndarray:
    """Resize by ``factor`` (cubic up, area down)."""
    if factor == 1.0:
        return gray
    h, w = gray.shape[:2]
    interp = cv2.INTER_CUBIC if factor > 1 else cv2.INTER_AREA
    return cv2.resize(gray, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=interp)


def denoise(gray: np.ndarray, stats: TextStats) -> np.ndarray:
    """A 3x3 median filter, only for measurably speckled pages (it would thin clean strokes)."""
    if stats.speckle_ratio < 0.35 or stats.components < 50:
        return gray
    return cv2.medianBlur(gray, 3)


def _profile_scores(xs: np.ndarray, ys: np.ndarray, angles: np.ndarray, bin_px: float = 1.0) -> np.ndarray:
    """Sharpness of the row histogram of points rotated by each angle (degrees, CCW)."""
    scores = np.empty(len(angles))
    cx, cy = xs.mean(), ys.mean()
    for i, a in enumerate(np.deg2rad(angles)):
        # Row of each point after rotating the page by ``a`` counter-clockwise about its centre.
        rows = np.round(((ys - cy) * np.cos(a) - (xs - cx) * np.sin(a)) / bin_px).astype(np.int64)
        hist = np.bincount(rows - rows.min())
        scores[i] = float(np.sum(np.diff(hist.astype(np.float64)) ** 2))
    return scores


def _best_angle(xs: np.ndarray, ys: np.ndarray, max_angle: float, bin_px: float) -> float:
    base = _profile_scores(xs, ys, np.array([0.0]), bin_px)[0]
    coarse = np.arange(-max_angle, max_angle + 0.01, 0.5)
    best = float(coarse[int(np.argmax(_profile_scores(xs, ys, coarse, bin_px)))])
    fine = np.arange(best - 0.5, best + 0.51, 0.1)
    fine_scores = _profile_scores(xs, ys, fine, bin_px)
    best = float(fine[int(np.argmax(fine_scores))])
    if abs(best) < _MIN_SKEW or fine_scores.max() < base * 1.15:
        return 0.0
    return round(best, 2)


def estimate_skew(gray: np.ndarray, stats: TextStats | None = None, max_angle: float = 10.0) -> float:
    """Small skew angle in degrees (counter-clockwise positive, OpenCV's convention), or 0.

    Projection profiles: text lines give the sharpest row histogram when horizontal. The points
    are the bottoms of glyph-sized components (letters sit on baselines; paper texture, rules and
    pictures are left out), or every ink pixel when there are too few glyphs. Points are projected
    arithmetically (no image is rotated), so trying 40 angles costs milliseconds. The angle is
    kept only when it clearly beats 0 degrees, so a sideways or picture-only page is left alone.
    """
    stats = stats if stats is not None else measure_text(gray)
    if stats.baselines is not None and len(stats.baselines) >= 30:
        bin_px = max(1.0, (stats.median_height or 6.0) / 6.0)
        return _best_angle(stats.baselines[:, 0], stats.baselines[:, 1], max_angle, bin_px)
    small, _ = _downscale(gray, 1000)
    _, binary = cv2.threshold(small, 0, 1, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)
    ys, xs = np.nonzero(binary)
    if len(xs) < 200:
        return 0.0
    if len(xs) > 200_000:  # a regular subsample keeps the histogram's shape
        step = len(xs) // 200_000 + 1
        ys, xs = ys[::step], xs[::step]
    return _best_angle(xs.astype(np.float64), ys.astype(np.float64), max_angle, 1.0)


def rotate_small(gray: np.ndarray, angle: float) -> np.ndarray:
    """Rotate by a small angle on an enlarged white canvas so that no corner is cut off."""
    if angle == 0.0:
        return gray
    h, w = gray.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(h * sin + w * cos), int(h * cos + w * sin)
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    return cv2.warpAffine(gray, m, (nw, nh), flags=cv2.INTER_LINEAR, borderValue=255)


@dataclass
class Prepared:
    """A page ready for tesseract plus what was done to it (recorded in pages.json)."""

    gray: np.ndarray
    dpi: int
    scale: float = 1.0
    skew: float = 0.0
    perspective: bool = False
    denoised: bool = False
    rotation: int = 0  # clockwise turn applied before recognition (from the glyph geometry)
    turn: Turn | None = None
    timings: dict[str, float] = field(default_factory=dict)
    dewarped: bool = False  # a curved page's text lines were straightened (jobs.extract.dewarp)
    psm: int = 3  # tesseract page segmentation mode chosen from the text's width
    bilevel: bool = False  # black-and-white source: handed to tesseract as 1-bit (see preprocess)


def preprocess(gray: np.ndarray, dpi: float | None, *, photo_check: bool = True,
               orient: bool = False, bilevel: bool | None = None) -> Prepared:
    """Steps 2-6 of the module docstring on an upright-or-not grayscale page.

    ``orient``: turn the page upright before anything else when the glyph geometry says so
    clearly (:func:`text_turn`): a page turned by 90/270 degrees, or upside down with a clear
    baseline side, then pays no wasted first recognition.

    ``bilevel`` (measured when None): a black-and-white page stays black and white after the
    deskew and scaling (threshold at mid-grey), so tesseract gets a 1-bit image and skips its own
    thresholding and grey-level work: 10-15 % less tesseract CPU on the 1-bit test scans at equal
    or better CER. Grey pages are never binarised by us (receipts lost 0.05 word F1 that way).
    """
    if bilevel is None:
        bilevel = is_bilevel(gray)
    perspective = dewarped = False
    # A black-and-white page comes from a scanner or a fax, never straight from a camera: it has
    # no page edge in a background, no curvature and no uneven lighting to measure (those checks
    # cost ~0.3 s on a 300 dpi 1-bit page, a tenth of its recognition). An evenly lit grey page
    # (evenly_lit) is flat and shows no desk either: only the illumination step looks at it.
    background = None if bilevel else paper_background(gray)
    if photo_check and background is not None and not evenly_lit(background[0]):
        # A photographed curved page (leaflet, booklet): straighten its text lines first; a flat
        # page measures under the gate and comes back as the same array (bench/README-dewarp.md).
        flat = dewarp_if_curved(gray)
        gray, dewarped = flat.gray, flat.applied
        gray, perspective = correct_perspective(gray)
        if dewarped or perspective:
            background = paper_background(gray)  # another geometry: measured again
    lit = gray  # as lit: normalisation whitens a coloured bar, which the psm choice must still see
    if background is not None:
        gray = normalise_illumination(gray, background)
    stats = measure_text(gray)
    gray = stretch_faint(gray, stats)
    turn = text_turn(stats) if orient else None
    rotation = 0
    if turn is not None and (turn.vertical or (turn.rotation == 180 and turn.sure)):
        rotation = turn.rotation
        gray = rotate_right_angle(gray, rotation)
        stats = measure_text(gray)
    skew = estimate_skew(gray, stats)  # measured before scaling: the angle is the same
    psm = segmentation_mode(stats, lit)  # rotation does not change the dark share
    factor = resolution_factor(stats, gray.shape)
    gray = rescale(gray, factor)
    if factor != 1.0 and stats.median_height:
        stats = TextStats(stats.median_height * factor, stats.speckle_ratio, stats.components)
    cleaned = denoise(gray, stats)
    denoised = cleaned is not gray
    cleaned = rotate_small(cleaned, skew)
    if bilevel:
        cleaned = cv2.threshold(cleaned, 127, 255, cv2.THRESH_BINARY)[1]
    # Cameras and screenshots state 72 or 96 dpi, which says nothing about the paper: guess instead.
    base_dpi = dpi if dpi and 100 <= dpi <= 2400 else _guess_dpi(stats, factor)
    return Prepared(cleaned, int(round(base_dpi * factor)), factor, skew, perspective, denoised, rotation, turn,
                    dewarped=dewarped, psm=psm, bilevel=bilevel)


def _guess_dpi(stats: TextStats, factor: float) -> float:
    """Resolution of an image that does not state one: assume ~10 pt text, clamp to sane values."""
    if not stats.median_height:
        return 300.0
    original_height = stats.median_height / factor
    return float(min(600.0, max(72.0, original_height * 300.0 / 25.0)))
