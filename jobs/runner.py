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
        # The array shape's document (batching.Item): its extract stage may hand a long PDF to
        # page-range jobs, or merge their outputs (pipeline/page_ranges.py). None for a job of the
        # per_document shape, which reads the whole document itself.
        self.item: Any = None
        # Set by run_stages in the array shape: one per-document dict shared by the stages' contexts,
        # holding the original's one local copy (a scratch file of the document, removed with it)
        # and what identify said about it. None: each job fetches its own copy (per_document shape).
        self.shared: dict[str, Any] | None = None

    def fetch_original(self) -> Path:
        """The original as a local file, only ever read. In the array shape it is fetched once per
        document (a store copy or an S3 GET per stage was ~10 ms of non-work each) and shared."""
        if self.shared is None:
            dest = self.work / "original"
            self.store.download(self.doc.object_key, dest)
            return dest
        dest = self.shared.get("original")
        if dest is None:
            dest = self.work.parent / "original"
            self.store.download(self.doc.object_key, dest)
            self.shared["original"] = dest
        return dest

    def upload(self, name: str, path: Path, content_type: str) -> str:
        key = self.prefix + name
        self.store.put_file(key, path, content_type)
        return key

    def identify(self, src: Path) -> tuple[FileKind, int]:
        """What the upload really is, and its page count; a bad upload raises RejectedInput.

        The shared original of the array shape is identified once per document (a rejection raises
        in the first stage and ends the document, so only a success is remembered)."""
        from jobs.identify import identify, validate

        if self.shared is not None and self.shared.get("original") == src and "identified" in self.shared:
            return self.shared["identified"]
        kind = identify(src, self.settings)
        pages = validate(src, kind, self.settings)
        if self.shared is not None and self.shared.get("original") == src:
            self.shared["identified"] = (kind, pages)
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


# ---- the array shape: a child runs every stage for each document of its slice -----------------

#: The stages of one document, in order, inside one process (entities reads extract's text.txt).
SEQUENCE: tuple[str, ...] = ("extract", "entities", "convert")
#: Starts the line that opens and the one that closes a document's part of a child's log
#: (``<ROW_MARK> <row id> begins: ...`` / ``<ROW_MARK> <row id> ends: <status>``): compute/job_logs.py.
ROW_MARK = "medintake-row"


def run_slice(settings: Settings, manifest_key: str) -> int:
    """Run this child's slice of ``manifest_key``: each document's stages, its outcome recorded.

    A document that fails (rejected input or a transient error) is recorded FAILED on its row and
    the next document runs: the child still exits 0, so a bad document neither fails its batch
    mates nor burns the child's Batch retries, which stay for what kills the whole process (Spot
    reclaim, host, out of memory, timeout). A document already settled by an earlier attempt of
    this child (a Spot retry), or whose document has moved on to another attempt, is skipped.
    Returns the number of documents run now.
    """
    import os

    from pipeline import batching
    from pipeline.errors import ConfigError
    from pipeline.models import FINAL_STATUSES, Job

    job_id = os.environ.get("AWS_BATCH_JOB_ID", "")
    if not job_id:
        raise ConfigError("a process child needs AWS_BATCH_JOB_ID")
    store = open_store(settings)
    plan = batching.parse_manifest(store.get_bytes(manifest_key))
    if "AWS_BATCH_JOB_ARRAY_INDEX" in os.environ and ":" not in job_id:  # tolerate a bare parent id
        job_id = f"{job_id}:{os.environ['AWS_BATCH_JOB_ARRAY_INDEX']}"
    entries = batching.child_entries(plan, job_id)
    if not entries:
        raise ConfigError("the manifest has no slice for this child")
    repository.add_unit_rows(settings, [
        Job(id=rid, document_id=i.document_id, attempt=i.attempt, kind=batching.PROCESS_KIND,
            name=batching.row_name(i), status="SUBMITTED", tries=0, depends_on=[]) for rid, i in entries])
    rows = {r.id: r for r in repository.unit_rows(settings, [rid for rid, _ in entries])}
    ran = 0
    for rid, item in entries:
        row = rows.get(rid)
        if row is not None and row.status in ("SUCCEEDED", "FAILED"):
            continue  # finished by an earlier attempt of this child
        doc = repository.get_document(settings, item.document_id)
        if doc.attempt != item.attempt or doc.status in FINAL_STATUSES:
            continue
        try:
            run_document(settings, store, rid, item, job_id)
        finally:
            log.info("%s %s ends", ROW_MARK, rid)
        ran += 1
    log.info("child done: %d of %d document(s) run now", ran, len(entries))
    return ran


def run_document(settings: Settings, store: Store, rid: str, item: Any, job_id: str) -> None:
    from pipeline.batching import DOCUMENT_DONE
    from pipeline.errors import ExitCode, MedintakeError
    from pipeline.models import utcnow

    started = utcnow()
    stages: dict[str, Any] = {}
    # Wall seconds of each stage (the per_document shape has them as its three rows' durations),
    # and markers around the document's lines so `jobs show <row>` can cut its part of the log.
    seconds: dict[str, float] = {}
    log.info("%s %s begins: document %s attempt %d", ROW_MARK, rid, item.document_id, item.attempt)
    try:
        run_stages(settings, store, item, stages, seconds)
    except RejectedInput as exc:
        repository.settle_row(settings, rid, "FAILED", int(ExitCode.REJECTED_INPUT), DOCUMENT_DONE,
                              result={"stages": stages, "seconds": seconds, "batch_job_id": job_id},
                              reason=(exc.reason_code, exc.message), started_at=started)
        log.info("document %s attempt %d rejected (%s)", item.document_id, item.attempt, exc.reason_code)
        return
    except MedintakeError as exc:
        code = int(exc.exit_code)
        repository.settle_row(settings, rid, "FAILED", code, f"{DOCUMENT_DONE}: {type(exc).__name__}",
                              result={"stages": stages, "seconds": seconds, "batch_job_id": job_id}, started_at=started)
        log.warning("document %s attempt %d failed: %s [%s] exit=%d", item.document_id, item.attempt,
                    exc.message, type(exc).__name__, code)
        return
    except Exception as exc:  # a bug: recorded as retryable; the message may hold PHI, so type only
        repository.settle_row(settings, rid, "FAILED", int(ExitCode.INTERNAL), f"{DOCUMENT_DONE}: {type(exc).__name__}",
                              result={"stages": stages, "seconds": seconds, "batch_job_id": job_id}, started_at=started)
        log.error("document %s attempt %d crashed: %s", item.document_id, item.attempt, type(exc).__name__)
        return
    split = (stages.get("extract") or {}).get("split")
    if split:  # a long document: the tracker submits its page-range jobs and the merge job
        from pipeline.page_ranges import SPLIT

        repository.settle_row(settings, rid, "SUCCEEDED", 0, DOCUMENT_DONE,
                              result={"split": split, "stages": {}, "seconds": seconds, "batch_job_id": job_id},
                              reason=(SPLIT, f"{split['pages']} pages handed to page-range jobs"), started_at=started)
        log.info("document %s attempt %d: %d pages handed to page-range jobs", item.document_id, item.attempt,
                 split["pages"])
        return
    if getattr(item, "ranges", ""):  # merged and finished: the ranges' outputs are not needed again
        from pipeline.page_ranges import ranges_prefix

        try:
            store.delete_prefix(ranges_prefix(settings.results_prefix, item.document_id, item.attempt))
        except Exception as exc:  # left behind, harmless: keyed by attempt, never read by a later one
            log.warning("page-range outputs not removed (%s)", type(exc).__name__)
    repository.settle_row(settings, rid, "SUCCEEDED", 0, DOCUMENT_DONE,
                          result={"stages": stages, "seconds": seconds, "batch_job_id": job_id}, started_at=started)
    log.info("document %s attempt %d done", item.document_id, item.attempt)


def run_stages(settings: Settings, store: Store, item: Any, stages: dict[str, Any], seconds: dict[str, float]) -> None:
    """Every stage of one document in one scratch folder: each stage's result and wall seconds.

    The stages share one local copy of the original (``<scratch>/original``, fetched by the first
    stage that asks), removed with the scratch folder when the document ends, whether or not it failed.
    """
    import time

    shared: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="medintake-") as tmp:
        for kind in SEQUENCE:
            work = Path(tmp) / kind
            work.mkdir()
            ctx = JobContext(settings, store, item.document_id, item.attempt, work)
            ctx.item = item
            ctx.shared = shared
            t0 = time.monotonic()
            try:
                stages[kind] = job_function(kind)(ctx)
            finally:
                seconds[kind] = round(time.monotonic() - t0, 3)
            if kind == "extract" and stages[kind].get("split"):
                return  # entities and convert run once, after the merge
