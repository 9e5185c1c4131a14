"""Inputs that made a worker raise (found by running the extract and convert stages over public test
suites from registry packages; issue 9). Each is now read, or REJECTED with its reason on the first
attempt; never a crash that is retried three times and ends FAILED. The files are made here."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from compute.runtime import LocalRuntime
from jobs.extract.text import extract_text
from jobs.identify import identify, validate
from pipeline import repository
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
