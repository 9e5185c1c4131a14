"""Kill drill: workers SIGKILLed at the worst moments are retried per their job definition, and
what a document ends with (stored outputs, rows, job results, manifest) belongs to one attempt.

Moments: mid-OCR (a tesseract child recognising a page), after every output of a stage is stored
but before its rows commit, after the rows (and the job's result) commit but before the worker
exits or goes on; in both job shapes: ``per_document`` (one process per stage, Batch retries the
stage) and ``array`` (one process runs every stage of a document, Batch retries the whole
document; killed after the document's row is settled, the retry must skip it). The kill is real:
the worker process SIGKILLs itself at that moment (tests/drills/killshim/sitecustomize.py, put on
the workers' PYTHONPATH by this test only; production code has no hook). Everything the killed
attempt wrote is poisoned with a marker, so "one attempt only" is checked byte for byte: no marker
may survive a rerun in any stored object, row, job result or document field (and after a kill
past settling, everything must carry it: nothing was rerun), every stored object is one the
manifest names, and the rows agree with the stored outputs they describe. A stage killed in every
attempt fails after the definition's attempts (3): the document is FAILED with one notice.
The local compute environment runs the workers (``worker_start=exec``: a fresh interpreter per
attempt, which reads the shim), with the Batch semantics it implements (exit 137, retry strategy).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from compute.runtime import LocalRuntime
from conftest import FILES, REPO, read_notices
from drills.documents import image_bytes
from pipeline import repository
from pipeline.database import transaction
from pipeline.events import s3_notification
from pipeline.jobdefs import load_job_definitions
from pipeline.models import Entity, Page, Rendition
from pipeline.settings import Settings

SHIM = Path(__file__).resolve().parent / "drills" / "killshim"
POISON = "DRILL-POISON"

# name -> (stage killed or "*", moment, every attempt?), per job shape
PLANS = {
    "per_document": {
        "ocr-extract": ("extract", "ocr", False),
        "stored-entities": ("entities", "stored", False),
        "committed-extract": ("extract", "committed", False),
        "every-extract": ("extract", "stored", True),
        "control": None,
    },
    "array": {  # one process runs every stage of a document: a kill retries the whole document
        "ocr-extract": ("extract", "ocr", False),
        "stored-convert": ("convert", "stored", False),
        "committed-entities": ("entities", "committed", False),
        "settled": ("*", "settled", False),  # after the document's row is settled: the retry skips it
        "control": None,
    },
}


def _state(pid: int) -> str | None:
    """The process's state letter, None when it is gone (a zombie counts as dead: Z)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def _document_of(job) -> str:
    """The document a local compute job works for (per_document: its parameter; array: its name)."""
    return job.sub.parameters.get("document_id") or job.sub.name.split("-")[2]


@pytest.mark.parametrize("shape", ["per_document", "array"])
def test_killed_workers_are_retried_and_leave_one_attempts_outputs(tmp_path, monkeypatch, shape):
    drill = tmp_path / "drill"
    drill.mkdir()
    monkeypatch.setenv("PYTHONPATH", f"{SHIM}:{REPO}")
    monkeypatch.setenv("DRILL_DIR", str(drill))
    settings = Settings.load(data_dir=tmp_path / "data", workers=2, worker_start="exec", job_shape=shape)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    definitions = load_job_definitions(settings.job_definitions_dir)
    attempts_allowed = definitions["extract" if shape == "per_document" else "process"].attempts
    orphans: dict[int, str | None] = {}  # tesseract pid -> its state when the killed attempt was reaped
    PLAN = PLANS[shape]

    with LocalRuntime(settings) as runtime:
        refs, plan = {}, {}
        for n, (name, fault) in enumerate(PLAN.items()):
            path = inbox / f"{name}.png"
            if name == "ocr-extract":  # a full 300 dpi page: Tesseract works on it for a second or more
                path = inbox / f"{name}.pdf"
                path.write_bytes((FILES / "scanned_discharge.pdf").read_bytes())
            else:
                path.write_bytes(image_bytes(9000 + n, "png"))
            refs[name] = runtime.upload(path)
            if fault:
                kind, at, every = fault
                plan[refs[name].document_id] = {"kind": kind, "at": at, "every": every}
        (drill / "plan.json").write_text(json.dumps(plan))
        ocr_doc = refs["ocr-extract"].document_id

        def watch_orphans(event: dict) -> None:
            """When the killed OCR attempt is reaped, is its tesseract child still running?"""
            d = event["detail"]
            mine = ocr_doc in (d["parameters"].get("document_id"), d["jobName"].split("-")[2])
            if mine and d["status"] in ("RUNNABLE", "FAILED") and d.get("attempts"):
                for kill in _kills(drill):
                    if kill["document_id"] == ocr_doc:
                        for pid in kill["tesseract_pids"]:
                            orphans.setdefault(pid, _state(pid))

        runtime.compute.listeners.append(watch_orphans)
        for ref in refs.values():
            runtime.dispatcher.handle_event(s3_notification(ref))
        ids = {name: ref.document_id for name, ref in refs.items()}
        t0 = time.monotonic()
        runtime.run_until_final(list(ids.values()), max_seconds=600)
        seconds = time.monotonic() - t0
        runs: dict[str, list[tuple[str, list[int]]]] = {}  # document -> (kind, exit code per attempt) per job
        for job in runtime.compute.jobs.values():
            runs.setdefault(_document_of(job), []).append(
                (job.sub.kind, [a["container"]["exitCode"] for a in job.attempts]))

    kills = _kills(drill)
    assert {k["document_id"] for k in kills} == set(plan), "a planned kill did not happen"
    notices = read_notices(settings)
    assert sorted(n["document_id"] for n in notices) == sorted(ids.values()), "not exactly one notice each"

    stale: list[str] = []
    stale_checked = any(f and f[2] for f in PLAN.values())
    for name, fault in PLAN.items():
        doc_id = ids[name]
        doc = repository.get_document(settings, doc_id)
        kinds = dict(runs[doc_id]) if shape == "per_document" else None
        if fault and fault[2]:  # killed in every attempt: failed after the definition's attempts
            assert (doc.status, doc.reason_code) == ("FAILED", "job_failed"), (name, doc.status, doc.reason_code)
            if shape == "per_document":
                assert kinds["extract"] == [137] * attempts_allowed
                assert kinds["entities"] == []  # its dependent never ran
            else:  # each try of the document (document_retries) ran its attempts, each killed
                assert runs[doc_id] == [("process", [137] * attempts_allowed)] * (1 + settings.document_retries)
            prefix = f"{settings.results_prefix}{doc_id}/"
            named = set(json.loads(runtime.store.get_bytes(prefix + "manifest.json"))["outputs"].values())
            stale = sorted(set(runtime.store.list(prefix)) - named)  # open edge, docs/reliability.md
            continue
        assert doc.status == "COMPLETED", (name, doc.status, doc.reason_code)
        if shape == "per_document":
            for kind in ("extract", "entities", "convert"):
                expected = [137, 0] if fault and fault[0] == kind else [0]
                assert kinds[kind] == expected, (name, kind, kinds[kind])
        else:
            assert runs[doc_id] == [("process", [137, 0] if fault else [0])], (name, runs[doc_id])
        if fault and fault[1] == "settled":
            _check_all_from_the_killed_attempt(settings, runtime.store, doc_id, name)
        else:
            _check_one_attempt(settings, runtime.store, doc_id, name)

    # The killed OCR attempt's tesseract child: was it stopped with its worker, as a container's
    # processes are when the container's main process dies?
    assert orphans, "the mid-OCR kill left no tesseract pid to check"
    assert all(state in (None, "Z", "X") for state in orphans.values()), f"tesseract outlived its worker: {orphans}"
    print(f"\nkill drill ({shape} shape): {len(kills)} SIGKILLs ({', '.join(sorted({k['at'] for k in kills}))}) over "
          f"{len(PLAN)} documents in {seconds:.1f} s; each retried (exit 137 -> RETRY); "
          f"{'the every-attempt kill FAILED after ' + str(attempts_allowed) + ' attempts; ' if stale_checked else ''}no mix of "
          f"attempts in outputs, rows or fields; {len(notices)} notices"
          + (f"; the FAILED document keeps {len(stale)} object(s) of its killed attempts that its manifest "
             f"does not name" if stale_checked else ""))


def _kills(drill: Path) -> list[dict]:
    path = drill / "kills.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _check_one_attempt(settings: Settings, store, doc_id: str, name: str) -> None:
    """Everything the document ends with comes from its successful attempts; nothing from a killed one."""
    prefix = f"{settings.results_prefix}{doc_id}/"
    manifest = json.loads(store.get_bytes(prefix + "manifest.json"))
    listed = set(manifest["outputs"].values())
    stored = set(store.list(prefix))
    assert stored == listed, (name, "objects the manifest does not name", sorted(stored - listed))
    for key in stored:
        assert POISON.encode() not in store.get_bytes(key), (name, key)
    jobs = [j for j in repository.jobs_for(settings, doc_id, 1) if j.status == "SUCCEEDED"]
    assert all(POISON not in json.dumps(j.result) for j in jobs), name
    outputs = _outputs(jobs)
    assert {**outputs, "manifest": prefix + "manifest.json"} == manifest["outputs"], name
    doc = repository.get_document(settings, doc_id)
    assert POISON not in f"{doc.language} {doc.file_format}", name
    with transaction(settings) as s:
        pages = list(s.scalars(select(Page).where(Page.document_id == doc_id).order_by(Page.page_no)))
        entities = list(s.scalars(select(Entity).where(Entity.document_id == doc_id)))
        renditions = list(s.scalars(select(Rendition).where(Rendition.document_id == doc_id)))
    assert not any(POISON[:8] in (p.source or "") for p in pages), name
    assert not any(POISON[:8] in (e.category or "") for e in entities), name
    assert not any(POISON[:8] in (r.format or "") for r in renditions), name
    # The rows describe the stored outputs of the same attempt.
    pages_json = json.loads(store.get_bytes(outputs["pages"]))
    assert [(p["page_no"], p["source"]) for p in pages_json] == [(p.page_no, p.source) for p in pages], name
    entities_json = json.loads(store.get_bytes(outputs["entities"]))["Entities"]
    assert len(entities_json) == len(entities), name
    assert {r.object_key for r in renditions} == {v for k, v in outputs.items() if k.startswith("renditions/")}, name
    for r in renditions:
        assert len(store.get_bytes(r.object_key)) == r.bytes, (name, r.name)
    assert manifest["attempt"] == 1 and manifest["status"] == "COMPLETED"


def _outputs(jobs) -> dict[str, str]:
    """Output name -> key from the jobs' results (per_document: each job's; array: each stage's)."""
    out: dict[str, str] = {}
    for j in jobs:
        r = j.result or {}
        out.update(r.get("outputs", {}))
        for stage in (r.get("stages") or {}).values():
            out.update((stage or {}).get("outputs", {}))
    return out


def _check_all_from_the_killed_attempt(settings: Settings, store, doc_id: str, name: str) -> None:
    """Killed after its document was settled: the retry must not run it again, so everything the
    document ends with is the killed attempt's (all poisoned), not a mix with a rerun's."""
    prefix = f"{settings.results_prefix}{doc_id}/"
    manifest = json.loads(store.get_bytes(prefix + "manifest.json"))
    stored = set(store.list(prefix))
    assert stored == set(manifest["outputs"].values()), name
    for key in stored - {prefix + "manifest.json"}:
        assert POISON.encode() in store.get_bytes(key), (name, key, "rewritten by a second run")
    (row,) = [j for j in repository.jobs_for(settings, doc_id, 1) if j.status == "SUCCEEDED"]
    assert POISON in json.dumps(row.result), name
    with transaction(settings) as s:
        pages = list(s.scalars(select(Page).where(Page.document_id == doc_id)))
        renditions = list(s.scalars(select(Rendition).where(Rendition.document_id == doc_id)))
    assert pages and all(p.source.startswith(POISON[:8]) for p in pages), name
    assert renditions and all(r.format.startswith(POISON[:8]) for r in renditions), name
