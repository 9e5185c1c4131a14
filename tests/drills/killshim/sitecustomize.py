"""Test-only: SIGKILL a worker at a chosen moment of its job. Never on a production path.

The kill drill (tests/test_drills_kill.py) puts this folder first on the workers' PYTHONPATH;
Python imports ``sitecustomize`` at start-up, before ``python -m jobs`` runs. It does nothing
unless the process is a job worker (``python -m jobs ...``) and ``$DRILL_DIR/plan.json`` exists:
document id -> {"kind": stage or "*", "at": moment, "every": bool}. It works in both job shapes:
``per_document`` (one process per stage) and ``array`` (one process runs every stage of each of
its documents): the stage and document at hand are taken from ``jobs.runner.job_function``.
Moments (``at``):

- ``ocr``: while Tesseract is recognising a page (the worker dies, its tesseract child is left);
- ``stored``: every output of the stage is in the store; the stage's rows are not yet committed;
- ``committed``: the stage's rows (and, per_document shape, the job's result) are committed;
  the worker has not exited or gone on;
- ``settled`` (array shape): the document's row is settled SUCCEEDED; the child has not exited.

A planned kill happens once (a marker file), or in every attempt with "every". While a kill is
armed, everything the stage writes is poisoned (a marker in each stored object, in a string column
of each row, in the job result and the document fields it sets), so the drill can prove that what
a document ends with comes from one attempt only. The worker kills itself with SIGKILL: no
handler, no unwinding, as the kernel's OOM killer or a lost host would. Each kill appends a line
to ``$DRILL_DIR/kills.jsonl`` first.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time

POISON = "DRILL-POISON"
CURRENT: dict[str, str] = {}  # the document and stage this process is working on


def _is_worker() -> bool:
    argv = list(getattr(sys, "orig_argv", []))
    return bool(os.environ.get("DRILL_DIR")) and "-m" in argv and argv[argv.index("-m") + 1:][:1] == ["jobs"]


def _load_plan() -> dict:
    try:
        with open(os.path.join(os.environ["DRILL_DIR"], "plan.json"), encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return {}


PLAN = _load_plan() if _is_worker() else {}


def _marker(entry: dict) -> str:
    return os.path.join(os.environ["DRILL_DIR"], f"fired-{CURRENT['document_id']}-{entry['kind']}-{entry['at']}")


def armed(*moments: str) -> dict | None:
    """The plan entry if a kill at one of ``moments`` is due for the document and stage at hand."""
    entry = PLAN.get(CURRENT.get("document_id", ""))
    if not entry or entry["at"] not in moments or entry["kind"] not in ("*", CURRENT.get("kind")):
        return None
    if not entry.get("every") and os.path.exists(_marker(entry)):
        return None
    return entry


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


def die(entry: dict, **extra: object) -> None:
    record = {"document_id": CURRENT["document_id"], "kind": CURRENT["kind"], "at": entry["at"], "pid": os.getpid(),
              "batch_attempt": int(os.environ.get("AWS_BATCH_JOB_ATTEMPT", "0")), "time": time.time(), **extra}
    with open(_marker(entry), "a", encoding="utf-8"):
        pass
    with open(os.path.join(os.environ["DRILL_DIR"], "kills.jsonl"), "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # never reached: SIGKILL cannot be caught


def _install() -> None:
    from jobs import runner
    from pipeline import repository, store

    real_job_function = runner.job_function

    def job_function(kind):
        run = real_job_function(kind)

        def tracked(ctx):
            CURRENT.update(document_id=ctx.document_id, kind=kind)
            return run(ctx)

        return tracked

    runner.job_function = job_function
    poisoning = ("stored", "committed", "settled")

    # ---- poison everything an armed stage writes ----------------------------------------------
    def poisoned(key: str, data: bytes) -> bytes:
        """The marker in the object, keeping JSON valid for the stages that read it next."""
        if key.endswith(".json"):
            obj = json.loads(data)
            for item in obj if isinstance(obj, list) else [obj]:
                if isinstance(item, dict):
                    item["drill_poison"] = POISON
            return json.dumps(obj).encode()
        return data + (b"\n" if key.endswith(".txt") else b"") + POISON.encode()

    def poison_put_file(real):
        def put_file(self, key, path, content_type=None):
            if armed(*poisoning):
                target = f"{path}.poisoned"
                with open(path, "rb") as src, open(target, "wb") as dst:
                    dst.write(poisoned(key, src.read()))
                path = target
            return real(self, key, path, content_type)
        return put_file

    def poison_put_bytes(real):
        def put_bytes(self, key, data, content_type=None):
            if armed(*poisoning):
                data = poisoned(key, data)
            return real(self, key, data, content_type)
        return put_bytes

    for cls in (store.FolderStore, store.S3Store):
        cls.put_file = poison_put_file(cls.put_file)
        cls.put_bytes = poison_put_bytes(cls.put_bytes)

    columns = {"replace_pages": "source", "replace_entities": "category", "replace_renditions": "format"}
    for name, column in columns.items():
        real = getattr(repository, name)

        def replace(settings, doc_id, rows, _real=real, _column=column):
            rows = list(rows)
            if armed(*poisoning):
                for row in rows:  # ORM objects or plain dicts of columns (repository takes both)
                    if isinstance(row, dict):
                        row[_column] = POISON[: 8 if _column == "format" else 16]
                    else:
                        setattr(row, _column, POISON[: 8 if _column == "format" else 16])
            entry = armed("stored")
            if entry:
                die(entry, rows=len(rows))  # every output is stored, the rows are not committed
            out = _real(settings, doc_id, rows)
            entry = armed("committed")
            if entry and CURRENT.get("shape") == "array":
                die(entry)  # the stage's rows are committed; the next stage has not begun
            return out

        setattr(repository, name, replace)

    real_update = repository.update_document

    def update_document(settings, doc_id, **values):
        if armed(*poisoning):
            for field in ("language", "file_format"):
                if field in values:
                    values[field] = POISON
        return real_update(settings, doc_id, **values)

    repository.update_document = update_document

    real_save = repository.save_job_result

    def save_job_result(settings, job_id, result=None, reason=None):
        entry = armed("committed")
        if entry and result is not None:
            result = {**result, "drill_poison": POISON}
        real_save(settings, job_id, result=result, reason=reason)
        if entry and result is not None:
            die(entry)  # the rows and the job's result are committed; the worker has not exited

    repository.save_job_result = save_job_result

    if hasattr(repository, "settle_row"):
        real_settle = repository.settle_row

        def settle_row(settings, row_id, status, *args, **kwargs):
            entry = armed("settled")
            if entry and kwargs.get("result") is not None:
                kwargs["result"] = {**kwargs["result"], "drill_poison": POISON}
            out = real_settle(settings, row_id, status, *args, **kwargs)
            if entry and status == "SUCCEEDED":
                die(entry)  # the document is settled; the child has not exited
            return out

        repository.settle_row = settle_row

    # ---- mid-OCR: die while a tesseract child is recognising ----------------------------------
    if any(e["at"] == "ocr" for e in PLAN.values()):
        import threading

        from jobs.extract import tesseract

        real_call = tesseract.call

        def call(function, settings, **kwargs):
            entry = armed("ocr")
            if entry and "output_filename_base" in kwargs:  # recognition, not --version or OSD
                def kill_when_tesseract_runs() -> None:
                    while True:
                        children = _children()
                        if children:
                            time.sleep(0.2)  # well inside the page
                            die(entry, tesseract_pids=children)
                        time.sleep(0.01)

                threading.Thread(target=kill_when_tesseract_runs, daemon=True).start()
            return real_call(function, settings, **kwargs)

        tesseract.call = call


if PLAN:
    argv = list(sys.orig_argv)
    CURRENT["shape"] = "array" if "process" in argv[argv.index("-m") + 2:][:1] else "per_document"
    _install()
