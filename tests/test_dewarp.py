"""Dewarping of curved-page photos (jobs.extract.dewarp), with real Tesseract.

A flat page must come out unchanged (the gate), and a page bent round a known cylinder must read
much better after flattening than before. The flat pages are this repository's own fixtures
(tests/files, fabricated content); the curved one is the scanned fixture warped by a cylinder
seen in perspective, so the warp is known and the test can fail both ways. The real curved photos
are measured by bench/bench_dewarp.py (they cannot be committed).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pypdfium2 as pdfium
import pytest
from PIL import Image, ImageOps

from conftest import fixture_makers
from jobs.extract.dewarp import CURVATURE_GATE, dewarp_if_curved
from jobs.extract.ocr import ocr_image
from jobs.extract.preprocess import to_gray
from pipeline.settings import Settings

FILES = Path(__file__).resolve().parent / "files"


def _scan_lines() -> list[str]:
    return list(fixture_makers().SCAN_LINES)


def _scan() -> np.ndarray:
    """The scanned fixture's own pixels (the JPEG inside the PDF, 1500x700, 1.5 degrees skew, noise)."""
    doc = pdfium.PdfDocument(str(FILES / "scanned_discharge.pdf"))
    try:
        image = next(iter(doc[0].get_objects())).get_bitmap().to_pil()
        return np.ascontiguousarray(np.asarray(image.convert("L")))
    finally:
        doc.close()


def _cer(reference: str, hypothesis: str) -> float:
    ref, hyp = " ".join(reference.split()), " ".join(hypothesis.split())
    prev = list(range(len(hyp) + 1))
    for i, a in enumerate(ref, 1):
        cur = [i]
        for j, b in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a != b)))
        prev = cur
    return prev[-1] / max(1, len(ref))


def _ocr(gray: np.ndarray) -> str:
    page = ocr_image(Image.fromarray(gray), Settings(), dpi=300, want_pdf=False, photo_check=False)
    return page.recognition.text


def cylinder_warp(gray: np.ndarray, theta_max: float, depth: float) -> np.ndarray:
    """The page wrapped round a vertical cylinder bulging towards a camera above its middle.

    The sheet's x is arc length on the cylinder (angle up to ``theta_max`` either side), so the
    image's x is ``R sin(theta)``; the bulge's height above the edges, ``depth`` of the camera
    distance at the crest, enlarges y about the centre row by perspective. Text lines therefore
    bend, more the farther they are from the centre row, as on a photographed leaflet.
    """
    h, w = gray.shape
    pad = int(h * 0.3)
    canvas = np.full((h + 2 * pad, w), 255, np.uint8)
    canvas[pad:pad + h] = gray
    cx, cy = w / 2.0, canvas.shape[0] / 2.0
    radius = (w / 2.0) / theta_max
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(canvas.shape[0], dtype=np.float64))
    theta = np.arcsin(np.clip((u - cx) / radius, -np.sin(theta_max), np.sin(theta_max)))
    bulge = (np.cos(theta) - np.cos(theta_max)) / (1.0 - np.cos(theta_max))  # 0 at the edges, 1 on the crest
    map_x = (cx + radius * theta).astype(np.float32)
    map_y = (cy + (v - cy) * (1.0 - depth * bulge)).astype(np.float32)
    return cv2.remap(canvas, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=255)


@pytest.mark.parametrize("name", ["scanned_discharge.pdf", "screenshot_labs.png", "phone_photo_exif6.jpg"])
def test_flat_pages_come_out_unchanged(name):
    if name.endswith(".pdf"):
        gray = _scan()
    else:
        gray = to_gray(ImageOps.exif_transpose(Image.open(FILES / name)))
    before = gray.copy()
    result = dewarp_if_curved(gray)
    assert not result.applied
    assert result.gray is gray  # the very same array: no copy, no resampling
    assert np.array_equal(gray, before)
    assert result.curvature < CURVATURE_GATE / 2  # well inside the gate, not on its edge


def test_a_page_without_text_lines_is_left_alone():
    rng = np.random.default_rng(3)
    noise = rng.integers(0, 256, (800, 600), dtype=np.uint8)
    blank = np.full((800, 600), 250, np.uint8)
    for gray in (noise, blank):
        result = dewarp_if_curved(gray)
        assert result.gray is gray and not result.applied


def test_a_page_bent_round_a_cylinder_reads_much_better_flattened():
    reference = "\n".join(_scan_lines())
    flat = _scan()
    warped = cylinder_warp(flat, theta_max=1.0, depth=0.35)

    result = dewarp_if_curved(warped)
    assert result.applied
    assert result.curvature >= CURVATURE_GATE
    assert result.gray.shape == warped.shape

    cer_flat = _cer(reference, _ocr(flat))
    cer_warped = _cer(reference, _ocr(warped))
    cer_dewarped = _cer(reference, _ocr(result.gray))
    assert cer_flat < 0.02  # the fixture itself reads cleanly: what is measured is the warp
    assert cer_warped > 0.08  # the bend really hurts Tesseract ...
    assert cer_dewarped < cer_warped / 3  # ... and flattening takes most of it back
    assert cer_dewarped < 0.03

    # Flattened, the lines measure straighter than the warped ones did.
    assert dewarp_if_curved(result.gray).curvature < result.curvature / 1.5


def test_the_gate_is_a_threshold_on_the_measure():
    warped = cylinder_warp(_scan(), theta_max=1.0, depth=0.35)
    measured = dewarp_if_curved(warped).curvature
    assert dewarp_if_curved(warped, gate=measured + 0.01).gray is warped
    assert dewarp_if_curved(warped, gate=measured - 0.01).applied


def test_the_pipeline_flattens_a_shaded_curved_photo_and_skips_an_evenly_lit_page():
    """In ``preprocess`` the curvature is measured only where the paper is not evenly lit: a real
    photo of a bent page is shaded over the bend (the photos of bench/data/curved: background
    81-96 of 255), a scan or a rendering is white everywhere and never curved."""
    from jobs.extract.preprocess import preprocess

    warped = cylinder_warp(_scan(), theta_max=1.0, depth=0.35)
    h, w = warped.shape
    x = np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, :]
    shaded = (warped.astype(np.float32) * (1.0 - 0.35 * x * x)).astype(np.uint8)  # light falls off over the bend
    assert preprocess(shaded, 300, photo_check=True).dewarped
    assert not preprocess(_scan(), 300, photo_check=True).dewarped
