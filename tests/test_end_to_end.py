"""End to end on one machine, with the real Tesseract on real files, through the CLI.

Each input must end in the right final state with exactly one notice; rejected ones carry a
specific reason code; the uploaded original is byte-identical afterwards; no file name (PHI)
reaches a notice, a log line or the CLI's stderr.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FILES, REPO

# input file -> (name it is uploaded under: names can hold patients' names, expected status, reason)
CASES = {
    "digital_referral.pdf": ("Jane Doe referral.pdf", "COMPLETED", None),
    "scanned_discharge.pdf": ("Jane Doe discharge.pdf", "COMPLETED", None),
    "phone_photo_exif6.jpg": ("Jane Doe prescription.jpg", "COMPLETED", None),
    "screenshot_labs.png": ("Jane Doe labs.png", "COMPLETED", None),
    "corrupt.pdf": ("Jane Doe corrupt.pdf", "REJECTED", "corrupt_file"),
    "encrypted.pdf": ("Jane Doe locked.pdf", "REJECTED", "encrypted_pdf"),
    "empty.pdf": ("Jane Doe empty.pdf", "REJECTED", "empty_file"),
    "lying_extension.pdf": ("Jane Doe photo.pdf", "COMPLETED", None),
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_cli(args: list[str], env_extra: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDINTAKE_")}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-c", "import cli; cli.main()", *args],
        capture_output=True, text=True, env={**env, "PYTHONPATH": str(REPO)}, cwd=cwd, timeout=600,
    )


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    inbox = tmp / "inbox"
    inbox.mkdir()
    paths = []
    for fixture, (name, _, _) in CASES.items():
        dest = inbox / name
        shutil.copyfile(FILES / fixture, dest)
        paths.append(dest)
    before = {p.name: sha256(p) for p in paths}
    data = tmp / "data"
    proc = run_cli(["--data-dir", str(data), "process", "--json", "--workers", "2", *map(str, paths)])
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    return {"proc": proc, "rows": rows, "paths": paths, "before": before, "data": data}


def test_exit_status_and_one_line_per_input_in_order(processed):
    proc, rows = processed["proc"], processed["rows"]
    assert proc.returncode == 1, proc.stderr  # some inputs were rejected
    assert [r["input"] for r in rows] == [str(p) for p in processed["paths"]]
    for row in rows:
        assert set(row) == {"input", "document_id", "status", "reason_code", "outputs"}


@pytest.mark.parametrize("fixture", sorted(CASES))
def test_final_state_and_reason(processed, fixture):
    name, status, reason = CASES[fixture]
    row = next(r for r in processed["rows"] if r["input"].endswith(name))
    assert (row["status"], row["reason_code"]) == (status, reason)
    outputs = row["outputs"]
    assert Path(outputs["manifest"]).is_file()
    manifest = json.loads(Path(outputs["manifest"]).read_text())
    assert manifest["status"] == status and manifest["reason_code"] == reason
    assert manifest["source"]["sha256"] == processed["before"][name]  # rejected ones too
    if status == "COMPLETED":
        for key in ("text", "pages", "entities", "renditions/thumbnail", "renditions/preview", "renditions/web"):
            assert Path(outputs[key]).is_file(), key


def test_exactly_one_notice_per_document_without_phi(processed):
    lines = (processed["data"] / "notices.jsonl").read_text().splitlines()
    notices = [json.loads(line) for line in lines]
    ids = [n["document_id"] for n in notices]
    assert sorted(ids) == sorted(r["document_id"] for r in processed["rows"])  # one each, no more
    for n in notices:
        assert n["event_type"] == f"document.{n['status'].lower()}"
        assert n["attributes"]["status"] == n["status"]
    blob = "\n".join(lines)
    assert "Jane" not in blob and "Doe" not in blob  # file names can hold patients' names


def test_no_file_names_in_logs_or_stderr(processed):
    assert "Jane" not in processed["proc"].stderr
    for log in (processed["data"] / "logs").iterdir():
        text = log.read_text(errors="replace")
        assert "Jane" not in text and "Doe" not in text, log.name


def test_originals_are_byte_identical(processed):
    for p in processed["paths"]:
        assert sha256(p) == processed["before"][p.name]
    uploads = processed["data"] / "buckets" / "uploads" / "uploads"
    stored = {p.name: sha256(p) for p in uploads.rglob("*") if p.is_file()}
    assert stored == processed["before"]


def test_digital_pdf_text_comes_from_the_layer(processed):
    row = next(r for r in processed["rows"] if r["input"].endswith("Jane Doe referral.pdf"))
    pages = json.loads(Path(row["outputs"]["pages"]).read_text())
    assert [p["source"] for p in pages] == ["text-layer", "text-layer"]
    assert "searchable_pdf" not in row["outputs"]
    text = Path(row["outputs"]["text"]).read_text()
    assert "metformin" in text.lower() and "\f" in text
    entities = json.loads(Path(row["outputs"]["entities"]).read_text())["Entities"]
    assert any(e["Category"] == "MEDICATION" and text[e["BeginOffset"]:e["EndOffset"]] == e["Text"] for e in entities)


def test_scanned_inputs_are_ocred_with_a_searchable_pdf(processed):
    for name in ("Jane Doe discharge.pdf", "Jane Doe prescription.jpg", "Jane Doe labs.png", "Jane Doe photo.pdf"):
        row = next(r for r in processed["rows"] if r["input"].endswith(name))
        pages = json.loads(Path(row["outputs"]["pages"]).read_text())
        assert all(p["source"] == "ocr" for p in pages), name
        assert Path(row["outputs"]["searchable_pdf"]).is_file(), name
        assert len(Path(row["outputs"]["text"]).read_text().split()) >= 5, name


def test_lying_extension_is_processed_as_what_it_is(processed):
    row = next(r for r in processed["rows"] if r["input"].endswith("Jane Doe photo.pdf"))
    manifest = json.loads(Path(row["outputs"]["manifest"]).read_text())
    assert manifest["type"]["format"] == "JPEG"


def test_digital_pdf_never_calls_tesseract(tmp_path):
    """A tesseract shim first on PATH logs every call; a born-digital PDF must make none."""
    real = shutil.which("tesseract")
    assert real, "tesseract is not installed"
    shim_dir = tmp_path / "bin"
    shim_dir.mkdir()
    calls = tmp_path / "calls.log"
    shim = shim_dir / "tesseract"
    shim.write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\nexec "{real}" "$@"\n')
    shim.chmod(0o755)
    env = {"PATH": f"{shim_dir}{os.pathsep}{os.environ['PATH']}"}
    proc = run_cli(["--data-dir", str(tmp_path / "data"), "process", "--json", str(FILES / "digital_referral.pdf")],
                   env_extra=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "COMPLETED"
    ocr_calls = [c for c in calls.read_text().splitlines() if c.strip() != "--version"] if calls.exists() else []
    assert ocr_calls == []
    # ...and the shim is really on the path the workers use: an image does call it.
    proc = run_cli(["--data-dir", str(tmp_path / "data"), "process", "--json", str(FILES / "screenshot_labs.png")],
                   env_extra=env)
    assert proc.returncode == 0, proc.stderr
    assert calls.read_text().strip()
