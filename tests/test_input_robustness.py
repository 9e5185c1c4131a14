"""Inputs that made a worker raise (found by running the extract and convert stages over public test
suites from registry packages; issue 9). Each is now read, or REJECTED with its reason on the first
attempt; never a crash that is retried three times and ends FAILED. The files are made here."""
from __future__ import annotations

import io
import json
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from compute.runtime import LocalRuntime
from jobs.extract.text import extract_text
from jobs.identify import identify, validate
from pipeline import repository
from pipeline.errors import CorruptFile
from pipeline.settings import Settings

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def lab_tiff(path: Path) -> Path:
    """A CIE L*a*b* TIFF (Pillow's hopper.Lab.tif made OCR fail: Pillow has no LAB -> L conversion)."""
    lightness = Image.new("L", (1100, 200), 255)
    ImageDraw.Draw(lightness).text((40, 60), "Aspirin 81 mg daily", font=ImageFont.truetype(FONT, 64), fill=0)
    neutral = Image.new("L", lightness.size, 128)
    Image.merge("LAB", (lightness, neutral, neutral)).save(path, "TIFF")
    return path


def test_lab_tiff_is_read(tmp_path):
    path = lab_tiff(tmp_path / "lab.tif")
    settings = Settings()
    with Image.open(path) as img:
        assert img.mode == "LAB"
    kind = identify(path, settings)
    validate(path, kind, settings)
    out = tmp_path / "out"
    out.mkdir()
    extract_text(path, kind, out, settings)
    assert "aspirin 81 mg" in (out / "text.txt").read_text().lower()


def test_crash_hunt_files_end_in_a_final_state_on_the_first_attempt(tmp_path):
    path = lab_tiff(tmp_path / "lab.tif")
    settings = Settings.load(data_dir=tmp_path / "data", workers=2)
    with LocalRuntime(settings) as runtime:
        doc_id = runtime.submit(path).document_id
        runtime.run_until_final([doc_id], max_seconds=300)
        doc = repository.get_document(settings, doc_id)
        assert doc.status == "COMPLETED"
        assert all(j.tries == 1 for j in repository.jobs_for(settings, doc_id, doc.attempt))
        manifest = json.loads(Path(runtime.outputs(doc_id)["manifest"]).read_text())
        assert "renditions/thumbnail" in manifest["outputs"]
    assert np.asarray(Image.open(Path(runtime.outputs(doc_id)["renditions/thumbnail"]))).std() > 10


# ---------------------------------------------------------------------------------------------
# Damaged images whose Pillow plugin raises something other than OSError/ValueError (found by
# mutating Pillow's test images): these used to escape identify.validate and crash the worker.
# ---------------------------------------------------------------------------------------------

def three_frame_gif() -> bytes:
    frames = []
    for i in range(3):
        frame = Image.new("P", (40, 20), 0)
        frame.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
        ImageDraw.Draw(frame).rectangle([i * 5, 2, i * 5 + 10, 12], fill=1)
        frames.append(frame)
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], loop=0, duration=100)
    return buf.getvalue()


def three_page_tiff() -> bytes:
    pages = [Image.new("L", (40, 20), i * 80) for i in range(3)]
    buf = io.BytesIO()
    pages[0].save(buf, "TIFF", save_all=True, append_images=pages[1:])
    return buf.getvalue()


def avif() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(buf, "AVIF")
    return buf.getvalue()


def zeroed(data: bytes, at: int) -> bytes:
    return data[:at] + bytes(16) + data[at + 16:]


DAMAGED = {
    "gif-cut-in-frame-2": (lambda: three_frame_gif()[:143], IndexError),
    "gif-cut-in-extension": (lambda: three_frame_gif()[:151], struct.error),
    "tiff-cut-in-ifd-2": (lambda: three_page_tiff()[:122], TypeError),
    "tiff-zeroed-ifd": (lambda: zeroed(three_page_tiff(), 979), KeyError),
    "avif-zeroed-item": (lambda: zeroed(avif(), 95), RuntimeError),
}


@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_damaged_images_are_corrupt_not_crashes(name, tmp_path):
    make, raw_error = DAMAGED[name]
    data = make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(raw_error):  # what Pillow itself raises on this file
            with Image.open(io.BytesIO(data)) as img:
                getattr(img, "n_frames", 1)
                img.load()
    path = tmp_path / name
    path.write_bytes(data)
    settings = Settings()
    with pytest.raises(CorruptFile) as err:
        validate(path, identify(path, settings), settings)
    assert err.value.reason_code == "corrupt_file"


def test_damaged_gif_is_rejected_on_the_first_attempt(tmp_path):
    path = tmp_path / "cut.gif"
    path.write_bytes(three_frame_gif()[:143])
    settings = Settings.load(data_dir=tmp_path / "data", workers=2)
    with LocalRuntime(settings) as runtime:
        doc_id = runtime.submit(path).document_id
        runtime.run_until_final([doc_id], max_seconds=300)
    doc = repository.get_document(settings, doc_id)
    assert doc.status == "REJECTED"
    jobs = repository.jobs_for(settings, doc_id, doc.attempt)
    assert all(j.tries <= 1 for j in jobs)
    manifest = json.loads(next(settings.data_dir.rglob("manifest.json")).read_text())
    assert manifest["reason_code"] == "corrupt_file"
