"""Run one job for one document attempt: fetch the original, run the kind's job, store the results.

Shared by every job kind. Each kind's ``jobs/<kind>/job.py`` turns the stage (which reads local
files and writes local files) into stored outputs and rows through the :class:`JobContext`; the
stages themselves never talk to the store or the database. The original is downloaded to a scratch
folder under a neutral name (never the upload's file name, which may hold a patient's name) and is
only ever read. Every output is uploaded under ``results/<document_id>/`` with one atomic PUT
each, and each job's rows are replaced in one transaction, so a rerun replaces results rather
than mixing two runs.
"""
from __future__ import annotations

import hashlib
import importlib
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from pipeline import repository
from pipeline.errors import RejectedInput
from pipeline.settings import Settings
from pipeline.store import Store, open_store

if TYPE_CHECKING:
    from jobs.identify import FileKind

log = logging.getLogger("medintake.jobs")


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (uploads can be hundreds of MB)."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class JobContext:
    """One attempt's scratch folder, its document row and the way to the store."""

    def __init__(self, settings: Settings, store: Store, document_id: str, attempt: int, work: Path) -> None:
        self.settings = settings
        self.store = store
        self.document_id = document_id
        self.attempt = attempt
        self.work = work
        self.doc = repository.get_document(settings, document_id)
        self.prefix = f"{settings.results_prefix}{document_id}/"

    def fetch_original(self) -> Path:
        dest = self.work / "original"
        self.store.download(self.doc.object_key, dest)
        return dest

    def upload(self, name: str, path: Path, content_type: str) -> str:
        key = self.prefix + name
        self.store.put_file(key, path, content_type)
        return key

    def identify(self, src: Path) -> tuple[FileKind, int]:
        """What the upload really is, and its page count; a bad upload raises RejectedInput."""
        from jobs.identify import identify, validate

        kind = identify(src, self.settings)
        pages = validate(src, kind, self.settings)
        return kind, pages


#: Job kinds, named as their job definitions; each is the package ``jobs.<kind>`` whose ``job``
#: module has ``run(ctx) -> dict`` (imported only when that kind runs: a job loads only its engines).
KINDS: tuple[str, ...] = ("extract", "entities", "convert")


def job_function(kind: str) -> Callable[[JobContext], dict[str, Any]]:
    """The ``run`` function of one job kind."""
    return importlib.import_module(f"jobs.{kind}.job").run


def run_job(settings: Settings, kind: str, document_id: str, attempt: int) -> dict[str, Any]:
    import os

    store = open_store(settings)
    job_id = os.environ.get("AWS_BATCH_JOB_ID", "")
    with tempfile.TemporaryDirectory(prefix="medintake-") as tmp:
        ctx = JobContext(settings, store, document_id, attempt, Path(tmp))
        try:
            result = job_function(kind)(ctx)
        except RejectedInput as exc:
            if job_id:
                repository.save_job_result(settings, job_id, reason=(exc.reason_code, exc.message))
            raise
    if job_id:
        repository.save_job_result(settings, job_id, result=result)
    log.info("%s job done for document %s attempt %d", kind, document_id, attempt)
    return result
