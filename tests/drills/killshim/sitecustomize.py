"""Test-only: SIGKILL a worker at a chosen moment of its job. Never on a production path.

The kill drill (tests/test_drills_kill.py) puts this folder first on the workers' PYTHONPATH;
Python imports ``sitecustomize`` at start-up, before ``python -m jobs`` runs. It does nothing
unless the process is a job worker (``python -m jobs KIND --document-id ID``) named in the plan
(``$DRILL_DIR/plan.json``: document id -> {"kind", "at", "every"}), and, unless "every", only in
the job's first Batch attempt (AWS_BATCH_JOB_ATTEMPT=1). Moments (``at``):

- ``ocr``: while Tesseract is recognising a page (the worker dies, its tesseract child is left);
- ``stored``: every output of the job is in the store; the job's rows are not yet committed;
- ``committed``: the rows and the job's result are committed; the worker has not exited.

Whatever the killed attempt writes is poisoned (a marker in each stored object, in a string column
of each row, in the job result and the document fields it sets), so the drill can prove that no
byte of a killed attempt survives next to the retry's: outputs and rows of one attempt only.
The worker kills itself with SIGKILL: no handler, no unwinding, as the kernel's OOM killer or a
lost host would. Each kill appends a line to ``$DRILL_DIR/kills.jsonl`` first.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time

POISON = "DRILL-POISON"


def _plan() -> dict | None:
    argv = list(getattr(sys, "orig_argv", []))
    folder = os.environ.get("DRILL_DIR")
    if not folder or "-m" not in argv or os.environ.get("AWS_BATCH_JOB_ID") is None:
        return None
    rest = argv[argv.index("-m") + 1:]
    if len(rest) < 4 or rest[0] != "jobs" or "--document-id" not in rest:
        return None
    kind, doc_id = rest[1], rest[rest.index("--document-id") + 1]
    try:
        with open(os.path.join(folder, "plan.json"), encoding="utf-8") as fh:
            entry = json.load(fh).get(doc_id)
    except FileNotFoundError:
        return None
    if not entry or entry["kind"] != kind:
        return None
    if not entry.get("every") and os.environ.get("AWS_BATCH_JOB_ATTEMPT") != "1":
        return None
    return {**entry, "document_id": doc_id, "folder": folder}


def _children() -> list[int]:
    me = str(os.getpid())
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == me:
                out.append(int(name))
    return out


def _die(plan: dict, **extra: object) -> None:
    record = {"document_id": plan["document_id"], "kind": plan["kind"], "at": plan["at"], "pid": os.getpid(),
              "attempt": int(os.environ.get("AWS_BATCH_JOB_ATTEMPT", "0")), "time": time.time(), **extra}
    with open(os.path.join(plan["folder"], "kills.jsonl"), "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # never reached: SIGKILL cannot be caught


def _install(plan: dict) -> None:
    from pipeline import repository, store

    # ---- poison everything this attempt writes ------------------------------------------------
    def poison_put_file(real):
        def put_file(self, key, path, content_type=None):
            poisoned = f"{path}.poisoned"
            with open(path, "rb") as src, open(poisoned, "wb") as dst:
                dst.write(src.read() + POISON.encode())
            return real(self, key, poisoned, content_type)
        return put_file

    def poison_put_bytes(real):
        def put_bytes(self, key, data, content_type=None):
            return real(self, key, data + POISON.encode(), content_type)
        return put_bytes

    for cls in (store.FolderStore, store.S3Store):
        cls.put_file = poison_put_file(cls.put_file)
        cls.put_bytes = poison_put_bytes(cls.put_bytes)

    columns = {"replace_pages": "source", "replace_entities": "category", "replace_renditions": "format"}
    for name, column in columns.items():
        real = getattr(repository, name)

        def replace(settings, doc_id, rows, _real=real, _column=column):
            rows = list(rows)
            for row in rows:
                setattr(row, _column, POISON[: 8 if _column == "format" else 16])
            if plan["at"] == "stored":
                _die(plan, rows=len(rows))  # every output is stored, the rows are not committed
            return _real(settings, doc_id, rows)

        setattr(repository, name, replace)

    real_update = repository.update_document

    def update_document(settings, doc_id, **values):
        for field in ("language", "file_format"):
            if field in values:
                values[field] = POISON
        return real_update(settings, doc_id, **values)

    repository.update_document = update_document

    real_save = repository.save_job_result

    def save_job_result(settings, job_id, result=None, reason=None):
        if result is not None:
            result = {**result, "drill_poison": POISON}
        real_save(settings, job_id, result=result, reason=reason)
        if plan["at"] == "committed" and result is not None:
            _die(plan)  # the rows and the result are committed; the worker has not exited

    repository.save_job_result = save_job_result

    # ---- mid-OCR: die while a tesseract child is recognising ----------------------------------
    if plan["at"] == "ocr":
        import threading

        from jobs.extract import tesseract

        real_call = tesseract.call

        def call(function, settings, **kwargs):
            if "output_filename_base" in kwargs:  # recognition, not --version or OSD
                def kill_when_tesseract_runs() -> None:
                    while True:
                        children = _children()
                        if children:
                            time.sleep(0.2)  # well inside the page
                            _die(plan, tesseract_pids=children)
                        time.sleep(0.01)

                threading.Thread(target=kill_when_tesseract_runs, daemon=True).start()
            return real_call(function, settings, **kwargs)

        tesseract.call = call


_PLAN = _plan()
if _PLAN is not None:
    _install(_PLAN)
