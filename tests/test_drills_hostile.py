"""Hostile keys and arguments: nothing escapes the store root, CLI filters are data not SQL, and
the local data folder is owner-only while results are as readable as ``output_mode`` says.

S3 accepts almost any key, so an upload event can name ``../..``, an absolute path, a NUL byte or
a 2,000-byte name; the folder store must reject those (UnsafeKey, the document ends REJECTED
``unsafe_key``) and map every other key byte for byte, as S3 does: the NFC and NFD spellings of a
name are two objects, and look-alikes of '/' and '.' are plain characters of one segment.
"""
from __future__ import annotations

import json
import os
import stat
import time
import unicodedata
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import FILES
from sqlalchemy import inspect

from pipeline import database, repository
from pipeline.errors import UnsafeKey
from pipeline.events import UploadRef, s3_notification
from pipeline.store import FolderStore

HOSTILE = {
    "parent segments": "uploads/../../outside.pdf",
    "parent at the start": "../outside.pdf",
    "absolute path": "/etc/passwd",
    "NUL byte": "uploads/a\x00.pdf",
    "backslash traversal": "uploads\\..\\..\\outside.pdf",
    "dot segment": "uploads/./a.pdf",
    "empty segment": "uploads//a.pdf",
    "overlong segment": "uploads/" + "a" * 256 + ".pdf",
    "overlong key": "uploads/" + "/".join(["é" * 100] * 6),  # 1,200+ bytes in UTF-8
    "only dots": "..",
}

LOOKALIKES = {
    "NFC": unicodedata.normalize("NFC", "uploads/Zoë Müller.pdf"),
    "NFD": unicodedata.normalize("NFD", "uploads/Zoë Müller.pdf"),
    "division slash": "uploads/..\u2215..\u2215outside.pdf",
    "fullwidth dots": "uploads/\uff0e\uff0e/outside.pdf",
    "one-dot leaders": "uploads/\u2024\u2024/outside.pdf",
    "zero-width space": "uploads/..\u200b/outside.pdf",
    "fraction slash": "uploads/a\u2044b.pdf",
    "percent-encoded dots": "uploads/%2e%2e/outside.pdf",
}


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_hostile_keys_never_leave_the_store_root(tmp_path):
    store = FolderStore(tmp_path / "buckets", "uploads")
    (tmp_path / "outside.pdf").write_bytes(b"%PDF-1.4 not yours")
    before = tree(tmp_path)
    refused = 0
    for name, key in HOSTILE.items():
        for op in (lambda: store.put_bytes(key, b"x"), lambda: store.get_bytes(key), lambda: store.head(key),
                   lambda: store.local_path(key), lambda: store.download(key, tmp_path / "dl"),
                   lambda: store.put_file(key, FILES / "empty.pdf")):
            with pytest.raises(UnsafeKey) as err:
                op()
            assert len(key) < 3 or key not in str(err.value), name  # the message never repeats the key
            refused += 1
    assert tree(tmp_path) == before and (tmp_path / "outside.pdf").read_bytes() == b"%PDF-1.4 not yours"
    print(f"\n[drill hostile keys] {len(HOSTILE)} keys x 6 operations: {refused} refused with UnsafeKey, "
          f"0 files created or read outside the bucket")


def test_lookalike_keys_are_mapped_byte_for_byte_inside_the_root(tmp_path):
    store = FolderStore(tmp_path / "buckets", "uploads")
    for name, key in LOOKALIKES.items():
        store.put_bytes(key, name.encode())
    for name, key in LOOKALIKES.items():
        assert store.get_bytes(key) == name.encode(), name  # NFC and NFD did not overwrite each other
        path = store.local_path(key)
        assert path is not None and path.resolve().is_relative_to(store.root), name
    assert sorted(store.list("uploads/")) == sorted(LOOKALIKES.values())
    assert not (tmp_path / "outside.pdf").exists() and not (tmp_path / "buckets" / "outside.pdf").exists()
    print(f"\n[drill look-alike keys] {len(LOOKALIKES)} keys (NFC/NFD, U+2215, U+FF0E, U+2024, U+200B, U+2044, "
          f"%2e): {len(LOOKALIKES)} distinct objects inside the bucket, 0 outside")


def test_hostile_upload_events_end_rejected_unsafe_key(settings):
    from compute.runtime import LocalRuntime

    outside = settings.data_dir / "outside.pdf"  # where "uploads/../../outside.pdf" would lead
    settings.data_dir.mkdir(parents=True)
    outside.write_bytes((FILES / "digital_referral.pdf").read_bytes())
    keys = [HOSTILE["parent segments"], HOSTILE["NUL byte"], HOSTILE["overlong segment"]]
    t0 = time.monotonic()
    with LocalRuntime(settings) as runtime:
        ids = []
        for key in keys:
            ref = UploadRef(settings.bucket, key, None, "0" * 32, 1234)
            runtime.dispatcher.handle_event(s3_notification(ref))
            ids.append(ref.document_id)
        runtime.run_until_final(ids, max_seconds=120)
    docs = repository.find_documents(settings, ids)
    assert {(d.status, d.reason_code) for d in docs.values()} == {("REJECTED", "unsafe_key")}
    assert outside.read_bytes() == (FILES / "digital_referral.pdf").read_bytes()
    print(f"\n[drill hostile upload events] {len(keys)} events with '..', NUL and a 260-byte segment: "
          f"all REJECTED unsafe_key in {time.monotonic() - t0:.1f} s, the file they point at untouched")


# ---- CLI filters against SQL injection ------------------------------------------------------

KEYS = ["uploads/a%b.pdf", "uploads/a_b.pdf", "uploads/axb.pdf", "uploads/o'brien.pdf"]
PAYLOADS = {  # --prefix value -> keys it must select (literally)
    "uploads/a%": ["uploads/a%b.pdf"],
    "uploads/a_": ["uploads/a_b.pdf"],
    "uploads/o'": ["uploads/o'brien.pdf"],
    "%": [],
    "_": [],
    "' OR '1'='1": [],
    "x'; DROP TABLE documents; --": [],
    "uploads/\\": [],
}
REASONS = {"job_failed": 4, "' OR 1=1 --": 0, "%": 0, "job_%": 0, "x'); DELETE FROM documents; --": 0}


def test_cli_filters_are_data_not_sql(db_settings, monkeypatch):
    import cli

    ids = {}
    for key in KEYS:
        doc, _ = repository.register_document(db_settings, UploadRef("uploads", key, "v1", "e", 1))
        repository.finalize(db_settings, doc.id, 1, "FAILED", ("job_failed", "The extract job failed."), {})
        ids[doc.id] = key
    for k, v in db_settings.to_env().items():
        monkeypatch.setenv(k, v)
    runner = CliRunner()
    checked = 0
    for prefix, expected in PAYLOADS.items():
        out = runner.invoke(cli.main, ["documents", "list", "--prefix", prefix, "--json"], catch_exceptions=False)
        assert out.exit_code == 0, out.output
        assert sorted(ids[r["document_id"]] for r in json.loads(out.stdout)) == sorted(expected), prefix
        plan = runner.invoke(cli.main, ["reprocess", "--status", "failed", "--prefix", prefix, "--dry-run", "--json"],
                             catch_exceptions=False)
        assert plan.exit_code == 0, plan.output
        chosen = [json.loads(line)["document_id"] for line in plan.stdout.splitlines() if line.startswith("{")]
        assert sorted(ids[i] for i in chosen) == sorted(expected), prefix
        checked += 2
    for reason, count in REASONS.items():
        out = runner.invoke(cli.main, ["documents", "list", "--reason", reason, "--json"], catch_exceptions=False)
        assert out.exit_code == 0 and len(json.loads(out.stdout)) == count, reason
        checked += 1
    assert "documents" in inspect(database.get_engine(db_settings)).get_table_names()
    assert len(repository.find_documents(db_settings, ids)) == len(KEYS)
    dialect = database.get_engine(db_settings).dialect.name
    print(f"\n[drill SQL in CLI filters, {dialect}] {checked} commands with quotes, %, _, ; and comment payloads: "
          f"each selected exactly the literal matches; tables and rows intact")


# ---- Modes ------------------------------------------------------------------------------------

def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("output_mode, data_mode, result_file, result_dir",
                         [("0640", 0o710, 0o640, 0o750), ("0600", 0o700, 0o600, 0o700)])
def test_data_folder_is_owner_only_results_as_configured(tmp_path, output_mode, data_mode, result_file, result_dir):
    from compute.runtime import LocalRuntime
    from pipeline.settings import Settings

    settings = Settings.load(data_dir=tmp_path / "data", workers=1, output_mode=output_mode)
    old = os.umask(0o002)  # a permissive umask must not widen anything
    try:
        with LocalRuntime(settings) as runtime:
            doc_id = runtime.submit(FILES / "screenshot_labs.png").document_id
            runtime.run_until_final([doc_id], max_seconds=180)
            outputs = runtime.outputs(doc_id)
    finally:
        os.umask(old)
    assert repository.get_document(settings, doc_id).status == "COMPLETED"
    data = settings.data_dir
    store_root = settings.effective_store_root / settings.bucket
    assert _mode(data) == data_mode
    assert _mode(settings.effective_store_root) == data_mode - 0o000 and _mode(store_root) == data_mode
    assert _mode(data / "medintake.db") == 0o600 and _mode(settings.effective_notices_path) == 0o600
    originals = [p for p in (store_root / "uploads").rglob("*")]
    assert originals and all(_mode(p) == (0o700 if p.is_dir() else 0o600) for p in originals)
    results = [p for p in (store_root / "results").rglob("*")]
    assert len(outputs) >= 3 and all(Path(p).is_file() for p in outputs.values())
    assert all(_mode(p) == (result_dir if p.is_dir() else result_file) for p in results), \
        sorted((str(p.relative_to(store_root)), oct(_mode(p))) for p in results)
    print(f"\n[drill modes output_mode={output_mode}] data folder {oct(data_mode)}, database and notices 0o600, "
          f"originals 0o600 in 0o700, {len([p for p in results if p.is_file()])} result files {oct(result_file)} "
          f"in {oct(result_dir)} (umask 002)")
