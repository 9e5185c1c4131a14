"""Flattening of photographed curved pages (a leaflet or booklet photographed on a knee).

Why: on a curved page the text lines bend, and Tesseract's line finder cuts a bent line into
pieces, mixes neighbouring lines and reads the photos in bench/data/curved at CER 0.14-0.30.
Straightening the lines before recognition brings them to 0.003-0.03 (bench/README-dewarp.md);
a full 3-D page model (page_dewarp's cubic sheet) is not needed for that.

How (text-line based, OpenCV + numpy only):

1. On a reduced copy: adaptive threshold, connected components; the glyph-sized ones give the
   text height ``h`` and a mask of letters (pictures, rules, page edges and speckle left out).
2. A horizontal closing about one text height wide joins letters into word and line blobs. Each
   long, thin blob is one piece of a text line: a quadratic fitted to its column centroids gives
   the line's direction (slope) at points along it. Blobs the quadratic does not fit are dropped.
3. The scattered slopes become a smooth slope field over the page by normalised convolution
   (Gaussian-weighted averages at three scales, so gaps between columns and margins are filled
   from farther away).
4. Every output row follows the field's integral curve (midpoint rule) from the middle of the
   text to both sides: that curve is where the text line through that row lies in the photo.
   Those source rows form a ``cv2.remap`` grid, so the bent lines come out straight.
5. The curvature measure (in text heights) is the geometric mean of two estimates of how far
   lines depart from straight: the field's integral curves over their stretch through text
   (75th percentile of the largest residual of a straight fit: long-range bending, across
   columns), and the long blobs' own quadratics (width-weighted 75th percentile of their
   sagitta, each only as far as its neighbouring line bends the same way: direct evidence,
   which field artefacts near pictures, faded dotted print or stamps cannot fake). A flat page
   (scan, photo of a flat sheet, skewed or keystoned: straight lines all) measures well under
   the gate and is returned unchanged: the same array object. A page lying sideways (more line
   length when letters are joined down the columns) measures 0: the pipeline turns it upright
   later and preprocesses it again, and then it is measured the right way up.

Only vertical displacement is corrected; the horizontal foreshortening of a cylinder is left
(Tesseract reads narrowed letters well, it does not read bent lines).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numpy as np

# Working resolution of the measurement (the remap itself is done at full resolution).
_MAX_SIDE = 1400
# Curvature (text heights of departure from a straight line) below which a page is left alone.
# Measured (bench/README-dewarp.md): flat pages 0.00-0.10, real receipts up to 0.15 (none of 79
# flattened), the curved photos 0.32-0.96; the gate sits 1.45x from either side.
CURVATURE_GATE = 0.22
# Fewer line samples than this: not enough text to say anything (pictures, near-empty pages).
_MIN_SAMPLES = 40
# A line blob is kept when its quadratic fits within this share of the text height (RMS).
_MAX_FIT_RMS = 0.25


@dataclass
class Dewarped:
    """The (possibly) flattened page and what was measured; ``applied`` False means unchanged."""

    gray: np.ndarray
    curvature: float
    applied: bool
    text_height: float | None = None
    lines: int = 0
    timings: dict[str, float] = field(default_factory=dict)


def _reduce(gray: np.ndarray) -> tuple[np.ndarray, float]:
    """A copy at most ``_MAX_SIDE`` px for measuring: body text stays ~9-19 px high on the photos
    measured, enough to find lines, and the measurement costs a few tens of milliseconds."""
    h, w = gray.shape[:2]
    f = min(1.0, _MAX_SIDE / max(h, w))
    if f >= 1.0:
        return gray, 1.0
    return cv2.resize(gray, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA), f


def _components(binary: np.ndarray) -> tuple:
    """Connected components with stats (8-connectivity) by Grana's algorithm: the same components
    as OpenCV's default, in half the time on these masks (4 vs 8 ms on a receipt)."""
    return cv2.connectedComponentsWithStatsWithAlgorithm(binary, 8, cv2.CV_32S, cv2.CCL_GRANA)


def _glyph_mask(small: np.ndarray) -> tuple[np.ndarray, float] | None:
    """Mask of glyph-sized ink components and their (median) height; None without text."""
    block = max(15, (min(small.shape) // 30) | 1)
    ink = cv2.adaptiveThreshold(small, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV, block, 12)
    n, labels, stats, _ = _components(ink)
    if n <= 1:
        return None
    st = stats[1:]
    w, h, area = st[:, cv2.CC_STAT_WIDTH], st[:, cv2.CC_STAT_HEIGHT], st[:, cv2.CC_STAT_AREA]
    plausible = (h >= 4) & (h <= small.shape[0] / 15) & (w <= h * 3) & (area >= 6) & (area <= w * h * 0.9)
    if np.count_nonzero(plausible) < 30:
        return None
    # Weighted by ink area: paper texture and scanner noise make many tiny components that
    # would otherwise outvote the letters.
    hs, ws = h[plausible].astype(np.float64), area[plausible].astype(np.float64)
    order = np.argsort(hs)
    cum = np.cumsum(ws[order])
    weighted = float(hs[order][np.searchsorted(cum, cum[-1] / 2.0)])
    # ... which leans towards capitals and bold headings: the plain median of the components
    # around it is the body text's height.
    near = plausible & (h >= weighted * 0.5) & (h <= weighted * 1.5)
    text_h = float(np.median(h[near]))
    keep = plausible & (h >= text_h * 0.5) & (h <= text_h * 2.2)
    lut = np.zeros(n, np.uint8)
    lut[1:][keep] = 255
    return lut[labels], text_h


def _join(glyphs: np.ndarray, text_h: float, vertical: bool) -> tuple[int, np.ndarray, np.ndarray]:
    """Letters joined into word and line blobs along rows (or down columns): CC labels and stats."""
    k = max(3, int(round(text_h * 1.2)))
    size = (1, k) if vertical else (k, 1)
    closed = cv2.morphologyEx(glyphs, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, size))
    return _components(closed)[:3]


def _line_length(stats: np.ndarray, text_h: float, vertical: bool) -> float:
    """Total length of the line-like blobs among ``_join``'s."""
    st = stats[1:]
    length = st[:, cv2.CC_STAT_HEIGHT if vertical else cv2.CC_STAT_WIDTH].astype(np.float64)
    across = st[:, cv2.CC_STAT_WIDTH if vertical else cv2.CC_STAT_HEIGHT].astype(np.float64)
    thickness = st[:, cv2.CC_STAT_AREA] / np.maximum(length, 1.0)
    line = (length >= text_h * 4) & (thickness <= text_h * 2.0) & (across <= length * 0.6)
    return float(length[line].sum())


def _line_samples(joined: tuple[int, np.ndarray, np.ndarray], text_h: float) -> tuple[np.ndarray, float]:
    """(x, y, slope, weight) samples along text-line blobs, and the blobs' own bending.

    The bending (:func:`_bending`) comes from the quadratics fitted to long blobs (10 text
    heights or more): direct evidence that lines bend, which the smoothed field alone could
    fake near pictures or column edges.
    """
    n, labels, stats = joined
    out: list[np.ndarray] = []
    sagittas: list[tuple[float, float]] = []
    step = max(1, int(text_h // 3))
    for i in range(1, n):
        x, y, w, h, area = stats[i]
        # Thickness, not box height: a long line photographed at an angle has a tall box.
        if w < text_h * 4 or h < text_h * 0.5 or area / w > text_h * 2.0 or h > w * 0.6:
            continue
        mask = labels[y:y + h, x:x + w] == i
        # Two lines joined where a descender touches the line below: somewhere a column holds
        # ink of both, taller than any single glyph (the glyph mask keeps them under 2.2 h).
        if h > text_h * 2.3:
            top = np.argmax(mask, axis=0)
            bottom = h - np.argmax(mask[::-1], axis=0)
            if int((bottom - top).max()) > text_h * 2.3:
                continue
        cols = np.arange(0, w, step)
        sub = mask[:, cols]
        count = sub.sum(axis=0)
        ok = count > 0
        if np.count_nonzero(ok) < 6:
            continue
        rows = np.arange(h, dtype=np.float64)[:, None]
        cy = (sub * rows).sum(axis=0)[ok] / count[ok] + y
        cx = cols[ok].astype(np.float64) + x
        deg = 2 if w >= text_h * 8 else 1
        coef = np.polyfit(cx, cy, deg)
        rms = float(np.sqrt(np.mean((np.polyval(coef, cx) - cy) ** 2)))
        if rms > text_h * _MAX_FIT_RMS:
            continue
        xs = np.arange(x + text_h / 2, x + w - text_h / 2, text_h, dtype=np.float64)
        if len(xs) == 0:
            continue
        slope = np.polyval(np.polyder(coef), xs)
        if np.any(np.abs(slope) > 0.6):  # steeper than ~30 degrees: not a text line we can follow
            continue
        out.append(np.stack([xs, np.polyval(coef, xs), slope, np.full_like(xs, 1.0)], axis=1))
        if w >= text_h * 10:
            sagittas.append((float(coef[0]) * (w / 2.0) ** 2 / text_h, float(w), float(x), float(x + w),
                             float(np.polyval(coef, x + w / 2.0))))
    if not out:
        return np.empty((0, 4)), 0.0
    return np.concatenate(out), _bending(np.array(sagittas).reshape(-1, 5), text_h)


def _bending(blobs: np.ndarray, text_h: float) -> float:
    """Width-weighted 75th percentile of the long blobs' sagitta, each confirmed by a neighbour.

    ``blobs`` rows: signed sagitta (text heights), width, x0, x1, y at the middle. A bent page
    bends neighbouring lines alike; a blob that bends alone (faded print breaking into dots,
    a stamp, handwriting) counts only as much as its nearest neighbour above or below agrees
    (same sign, the smaller magnitude).
    """
    if len(blobs) < 3:
        return 0.0
    sag, width, x0, x1, ym = blobs.T
    overlap = np.minimum(x1[:, None], x1[None, :]) - np.maximum(x0[:, None], x0[None, :])
    dy = np.abs(ym[:, None] - ym[None, :])
    near = (overlap > 0.3 * np.minimum(width[:, None], width[None, :])) & (dy < text_h * 5)
    np.fill_diagonal(near, False)
    dy = np.where(near, dy, np.inf)
    j = np.argmin(dy, axis=1)
    has = np.isfinite(dy[np.arange(len(sag)), j])
    agree = has & (np.sign(sag) == np.sign(sag[j]))
    confirmed = np.where(agree, np.minimum(np.abs(sag), np.abs(sag[j])), 0.0)
    order = np.argsort(confirmed)
    cum = np.cumsum(width[order]) / width.sum()
    return float(confirmed[order][min(len(sag) - 1, int(np.searchsorted(cum, 0.75)))])


def _slope_field(samples: np.ndarray, shape: tuple[int, int], cell: float,
                 text_h: float) -> tuple[np.ndarray, np.ndarray]:
    """Slope on a grid of ``cell``-sized cells (normalised convolution at three scales), and
    whether each node has line evidence of its own nearby (the finest scale's support)."""
    gh, gw = int(np.ceil(shape[0] / cell)) + 1, int(np.ceil(shape[1] / cell)) + 1
    num = np.zeros((gh, gw), np.float64)
    den = np.zeros((gh, gw), np.float64)
    gy = np.clip(np.round(samples[:, 1] / cell).astype(int), 0, gh - 1)
    gx = np.clip(np.round(samples[:, 0] / cell).astype(int), 0, gw - 1)
    np.add.at(num, (gy, gx), samples[:, 2] * samples[:, 3])
    np.add.at(den, (gy, gx), samples[:, 3])
    total_n = np.zeros_like(num)
    total_d = np.zeros_like(den)
    base = text_h * 3.0 / cell
    support = np.zeros_like(den)
    for sigma, weight in ((base, 1.0), (base * 4, 1e-3), (base * 16, 1e-6)):
        total_n += weight * cv2.GaussianBlur(num, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
        blurred = cv2.GaussianBlur(den, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
        total_d += weight * blurred
        if weight == 1.0:
            # One sample per text height along a line: a node between lines of text sees about
            # 1 / (2 pi sigma^2) * (samples within reach); a quarter of that counts as support.
            support = blurred > 0.25 * (cell / text_h) / (np.sqrt(2 * np.pi) * sigma)
    fallback = float(np.median(samples[:, 2]))
    with np.errstate(invalid="ignore", divide="ignore"):
        field_ = np.where(total_d > 1e-12, total_n / np.maximum(total_d, 1e-300), fallback)
    return field_, support


def _integrate(slopes: np.ndarray, cell: float, x_ref: float) -> np.ndarray:
    """Source row (reduced-image pixels) of every grid node: curves through each row at x_ref."""
    gh, gw = slopes.shape
    ys = np.arange(gh, dtype=np.float64) * cell
    j0 = int(np.clip(round(x_ref / cell), 0, gw - 1))
    curves = np.empty((gh, gw), np.float64)
    curves[:, j0] = ys

    def slope_at(j: float, y: np.ndarray) -> np.ndarray:
        lo = int(np.floor(j))
        hi = min(lo + 1, gw - 1)
        t = j - lo
        a = np.interp(y, ys, slopes[:, lo])
        return a if t == 0 else (1 - t) * a + t * np.interp(y, ys, slopes[:, hi])

    for direction in (1, -1):
        y = ys.copy()
        j = j0
        while 0 <= j + direction < gw:
            mid = y + 0.5 * direction * cell * slope_at(j, y)
            y = y + direction * cell * slope_at(j + 0.5 * direction, mid)
            j += direction
            curves[:, j] = y
    return curves


def _curvature(curves: np.ndarray, support: np.ndarray, text_h: float, cell: float) -> float:
    """How far text lines depart from straight lines, in text heights.

    For every integral curve that runs through text (supported nodes) over at least a third of
    the text's width, the largest residual of a straight fit over its supported stretch; the
    page's figure is the 75th percentile. Pictures and odd blobs bend the field only locally,
    where there is little support, so they do not make a flat page look curved.
    """
    cols = np.nonzero(support.any(axis=0))[0]
    if len(cols) < 4:
        return 0.0
    width = cols[-1] - cols[0] + 1
    gh = curves.shape[0]
    # Support at each curve's own position: look the node up at the curve's row, column by column.
    rows = np.clip(np.round(curves / cell).astype(int), 0, gh - 1)
    on_text = support[rows, np.arange(curves.shape[1])[None, :]]
    residuals = []
    for i in range(gh):
        js = np.nonzero(on_text[i])[0]
        if len(js) < max(4, width / 3):
            continue
        y = curves[i, js]
        coef = np.polyfit(js.astype(np.float64), y, 1)
        residuals.append(float(np.abs(np.polyval(coef, js) - y).max()))
    if len(residuals) < 3:
        return 0.0
    return float(np.percentile(residuals, 75) / text_h)


def measure(gray: np.ndarray) -> tuple[float, dict]:
    """Curvature of the page's text lines (text heights) and the model to flatten it."""
    small, f = _reduce(gray)
    found = _glyph_mask(small)
    if found is None:
        return 0.0, {}
    glyphs, text_h = found
    # A page lying sideways has its lines running down: rows joined across them would look like
    # short bent lines. Orientation is fixed later, and the upright page is measured again then.
    rows = _join(glyphs, text_h, vertical=False)
    columns = _join(glyphs, text_h, vertical=True)
    if _line_length(columns[2], text_h, vertical=True) > _line_length(rows[2], text_h, vertical=False):
        return 0.0, {"text_h": text_h / f}
    samples, bending = _line_samples(rows, text_h)
    if len(samples) < _MIN_SAMPLES:
        return 0.0, {"text_h": text_h / f}
    cell = max(4.0, text_h)
    slopes, support = _slope_field(samples, small.shape, cell, text_h)
    x_ref = float(np.median(samples[:, 0]))
    curves = _integrate(slopes, cell, x_ref)
    # Both must say "bent": the field's curves over whole lines (long-range bending across
    # columns) and the blobs' own quadratics (direct evidence, immune to field artefacts).
    curvature = float(np.sqrt(_curvature(curves, support, text_h, cell) * bending))
    return curvature, {"curves": curves, "cell": cell, "scale": f, "text_h": text_h / f,
                       "lines": len(samples)}


def remap(gray: np.ndarray, model: dict) -> np.ndarray:
    """Apply the flattening: every output row samples the photo along its integral curve."""
    h, w = gray.shape[:2]
    f, cell, curves = model["scale"], model["cell"], model["curves"]
    gh, gw = curves.shape
    # Node (i, j) sits at (j, i) * cell / f in full pixels and says which source row it samples.
    # Bilinear interpolation between nodes, separably: along x once for every node row, then
    # along y a band of output rows at a time (a 16 MP photo never holds full-size float maps).
    lo_x, t_x = _interp_weights(w, gw, f / cell)
    nodes = (curves / f).astype(np.float32)
    along = nodes[:, lo_x] * (1 - t_x) + nodes[:, lo_x + 1] * t_x  # (gh, w)
    lo_y, t_y = _interp_weights(h, gh, f / cell)
    # Rows that fall off the photo are filled with paper, not smeared edge pixels (streaks that
    # Tesseract would read as dashes).
    paper = float(np.percentile(gray[::8, ::8], 95))
    out = np.empty_like(gray)
    band = 1024
    map_x = np.ascontiguousarray(np.broadcast_to(np.arange(w, dtype=np.float32)[None, :], (min(band, h), w)))
    for r0 in range(0, h, band):
        r1 = min(h, r0 + band)
        lo, t = lo_y[r0:r1], t_y[r0:r1, None]
        map_y = along[lo] * (1 - t) + along[lo + 1] * t
        out[r0:r1] = cv2.remap(gray, map_x[:r1 - r0], map_y, cv2.INTER_CUBIC,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=paper)
    return out


def _interp_weights(n: int, nodes: int, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Lower node and the upper one's weight for pixels 0..n-1 at node coordinate k * factor.

    The node grids always have at least two nodes per axis (one more than the cells).
    """
    pos = np.clip(np.arange(n, dtype=np.float64) * factor, 0, nodes - 1)
    lo = np.minimum(np.floor(pos).astype(np.intp), nodes - 2)
    return lo, (pos - lo).astype(np.float32)


def dewarp_if_curved(gray: np.ndarray, gate: float = CURVATURE_GATE) -> Dewarped:
    """Flatten the page when its text lines are measurably curved; otherwise return it unchanged."""
    t0 = time.perf_counter()
    curvature, model = measure(gray)
    timings = {"measure": time.perf_counter() - t0}
    text_h = model.get("text_h")
    if curvature < gate or "curves" not in model:
        return Dewarped(gray, curvature, False, text_h, int(model.get("lines", 0)), timings)
    t0 = time.perf_counter()
    flat = remap(gray, model)
    timings["remap"] = time.perf_counter() - t0
    return Dewarped(flat, curvature, True, text_h, int(model["lines"]), timings)
