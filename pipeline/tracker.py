"""The tracker: the one place that decides a document's final state (SPEC 3.4).

It consumes Batch "Job State Change" events (EventBridge on AWS; the local compute environment
here), records each once, and when every job of a document attempt is terminal decides COMPLETED,
FAILED or REJECTED, writes the manifest and sends exactly one notice. Failures that never reach
our code (a killed worker, a timeout, a host lost) are visible only here, which is why the
decision lives here and not in the workers. Light module: runs in a small Lambda on AWS.

The array shape (docs/scale.md): a child ``<parent>:<index>`` (or a plain ``process`` job) runs a
slice of documents and records each one's outcome on the document's own row. Its events move
those rows; its terminal event (SUCCEEDED, or FAILED once Batch gave up on it) decides each of its
documents, so the notice comes from the child that finished the document, once: finalize() is
conditional, a rerun child skips settled documents, and the parent's events (which only sum up
the children) are recorded and change nothing. A document the child could not finish (a
transient error, or the child itself died for good) is resubmitted alone as the attempt's next
try, up to ``document_retries`` times; a rejected document is REJECTED at once.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from typing import Any

from pipeline import batching, page_ranges, repository
from pipeline.batch_events import DEPENDENCY_REASON, TERMINAL, TIMEOUT_REASON, parse_job_state_change
from pipeline.errors import ExitCode
from pipeline.jobdefs import GRAPH
from pipeline.models import FINAL_STATUSES, Document, Job
from pipeline.notify import Notifier, flush_outbox
from pipeline.settings import Settings
from pipeline.store import Store

log = logging.getLogger("medintake.tracker")


def decide(jobs: list[Job]) -> tuple[str, tuple[str, str] | None] | None:
    """(final status, (reason code, sentence)) once every job of the graph is terminal, else None."""
    if {j.kind for j in jobs} != set(GRAPH) or any(j.status not in TERMINAL for j in jobs):
        return None
    failed = [j for j in jobs if j.status == "FAILED"]
    rejected = [j for j in failed if j.exit_code == ExitCode.REJECTED_INPUT]
    if rejected:
        with_reason = [j for j in rejected if j.reason_code] or rejected
        j = with_reason[0]
        return "REJECTED", (j.reason_code or "rejected_input", j.reason_message or "The upload was rejected.")
    own = [j for j in failed if j.status_reason != DEPENDENCY_REASON] or failed
    if own:
        j = own[0]
        if j.status_reason == TIMEOUT_REASON:
            return "FAILED", ("job_timeout", f"The {j.kind} job exceeded its time limit.")
        return "FAILED", (
            "job_failed",
            f"The {j.kind} job failed after {j.tries} attempt(s) (last exit code {j.exit_code}).",
        )
    return "COMPLETED", None


def _try_no(job: Job) -> int:
    tail = job.name.rpartition("-t")[2]
    return int(tail) if tail.isdigit() else 1


def _handed_off(job: Job) -> bool:
    return job.reason_code in (page_ranges.SPLIT, page_ranges.SPLIT_SUBMITTED)


def latest_row(rows: list[Job]) -> Job:
    """The row that speaks for the document attempt: the highest try; within a try, a long
    document's merge row before the row that split it (created the same second, perhaps)."""
    return max(rows, key=lambda j: (_try_no(j), not _handed_off(j), j.created_at or 0))


def decide_rows(rows: list[Job], retries: int) -> tuple[str, tuple[str, str] | None] | None:
    """The array shape's decision for one document attempt from its rows (one per try).

    ("RETRY", None) when the latest try failed transiently and tries remain; ("SPLIT", None) when
    a child handed a long document to page-range jobs that are not submitted yet; None while a try
    runs, a resubmission or a long document's ranges are under way.
    """
    latest = latest_row(rows)
    if latest.status not in TERMINAL:
        return None
    if latest.status == "SUCCEEDED" and latest.reason_code == page_ranges.SPLIT:
        return "SPLIT", None
    if latest.status == "SUCCEEDED" and latest.reason_code == page_ranges.SPLIT_SUBMITTED:
        return None  # the merge row is being written (or its event will create it from the manifest)
    if latest.status == "SUCCEEDED":
        return "COMPLETED", None
    if latest.exit_code == ExitCode.REJECTED_INPUT:
        return "REJECTED", (latest.reason_code or "rejected_input", latest.reason_message or "The upload was rejected.")
    if latest.reason_code == batching.RETRIED:
        return None
    if _try_no(latest) <= retries:
        return "RETRY", None
    if latest.status_reason == TIMEOUT_REASON:
        return "FAILED", ("job_timeout", "The process job exceeded its time limit.")
    return "FAILED", ("job_failed", f"The document failed in {_try_no(latest)} tries (last exit code {latest.exit_code}).")


def stage_views(jobs: list[Job]) -> list[Job]:
    """Per-stage views of the array shape's latest row, so manifests read as with three jobs."""
    process = [j for j in jobs if j.kind == batching.PROCESS_KIND]
    if not process:
        return jobs
    latest = latest_row(process)
    views = [j for j in jobs if j.kind != batching.PROCESS_KIND]
    # Each stage's own wall seconds, as the child recorded them (jobs/runner.py): the stages ran
    # one after the other from the row's start, so each view spans its stage, not the document.
    seconds = (latest.result or {}).get("seconds") or {}
    start = latest.started_at
    for kind, result in ((latest.result or {}).get("stages") or {}).items():
        took = seconds.get(kind)
        stop = start + timedelta(seconds=took) if start is not None and took is not None else latest.stopped_at
        views.append(Job(id=latest.id, document_id=latest.document_id, attempt=latest.attempt, kind=kind,
                         name=latest.name, status="SUCCEEDED", tries=_try_no(latest), exit_code=0,
                         result=result, started_at=start if took is not None else latest.started_at,
                         stopped_at=stop))
        start = stop if took is not None else start
    return views


def _ranges_document(change: Any) -> str | None:
    """The document a ``pages`` job (or child) reads a range of: its name says (page_ranges.job_name)."""
    prefix = f"medintake-{page_ranges.PAGES_KIND}-"
    name = change.job_name or ""
    if not name.startswith(prefix) or not (change.parameters or {}).get("plan"):
        return None
    return name[len(prefix):].split("-", 1)[0] or None


class Tracker:
    def __init__(self, settings: Settings, store: Store, notifier: Notifier, dispatcher: Any = None) -> None:
        self.settings = settings
        self.store = store
        self.notifier = notifier
        self.dispatcher = dispatcher  # array shape: resubmits a failed document alone
        self.decided: list[str] = []  # every final status the last handle() decided (metrics)

    def handle(self, event: dict[str, Any]) -> str | None:
        """Apply one job state change; returns the document's final status if this decided it
        (in the array shape, the last of the child's documents it decided: see ``decided``)."""
        self.decided = []
        change = parse_job_state_change(event)
        if change is None:
            return None
        ranges_of = _ranges_document(change)
        if change.array_size is not None or ranges_of:
            # An array parent only sums up its children; a long document's page-range child decides
            # nothing (its merge job's row does): both recorded once, for the operator's history.
            repository.record_event_once(self.settings, change, document_id=ranges_of)
            return None
        if (change.parameters or {}).get("manifest"):
            return self._handle_unit(change)
        job = repository.record_job_event(self.settings, change)
        status = self._apply(job, change.status) if job is not None else None
        if job is None and change.status in TERMINAL:
            # A redelivered terminal event: its first delivery may have died after recording it
            # (database lost mid-way: the outage drill), before deciding. Decide again (idempotent).
            known = repository.get_job(self.settings, change.job_id)
            if known is not None and known.status in TERMINAL:
                status = self._apply(known, known.status)
        if change.status in TERMINAL:
            # Also on a duplicate: a redelivery after a failed publish must get the notice out.
            flush_outbox(self.settings, self.notifier)
        return status

    def _apply(self, job: Job, status: str) -> str | None:
        doc = repository.get_document(self.settings, job.document_id)
        if job.attempt != doc.attempt:
            return None  # a late event of an earlier attempt
        if status in ("STARTING", "RUNNING"):
            repository.claim(self.settings, doc.id, doc.attempt, "QUEUED", "PROCESSING")
        if status not in TERMINAL:
            return None
        return self.evaluate(doc)

    def _handle_unit(self, change: Any) -> str | None:
        """A state change of an array child or a plain process job: its documents' rows."""
        repository.record_event_once(self.settings, change)
        rows = repository.unit_rows(self.settings, batching.candidate_row_ids(change.job_id, change.parameters))
        if not rows and change.status in ("STARTING", "RUNNING", *TERMINAL):
            rows = self._rows_from_manifest(change)
        if not rows:
            return None
        ids = [r.id for r in rows]
        if change.status not in TERMINAL:
            repository.advance_rows(self.settings, ids, change)
            if change.status in ("STARTING", "RUNNING"):
                repository.claim_many(self.settings, {r.document_id: r.attempt for r in rows}, "QUEUED", "PROCESSING")
            return None
        repository.fail_unsettled(self.settings, ids, change)
        decided = None
        docs = repository.find_documents(self.settings, {r.document_id for r in rows})
        # A child that died for good leaves all its documents to retry: one job for all of them,
        # each alone in its own child, so a broken image or a lost host costs one SubmitJob per
        # child, not one per document, and no document shares a child with a bad one again.
        retries: list[tuple[str, batching.Item]] = []
        for row in rows:
            doc = docs.get(row.document_id)
            if doc is not None and doc.attempt == row.attempt:
                status = self.evaluate(doc, retries)
                if status:
                    self.decided.append(status)
                decided = status or decided
        if retries:
            self._resubmit_alone(retries)
        flush_outbox(self.settings, self.notifier)
        return decided

    def _resubmit_alone(self, retries: list[tuple[str, batching.Item]]) -> None:
        try:
            self.dispatcher.submit_items([item for _, item in retries], per_child=1)
        except BaseException:
            for row_id, _ in retries:
                repository.mark_resubmitted(self.settings, row_id, undo=True)
            raise
        log.info("%d document(s) resubmitted, each alone in its child", len(retries))

    def _rows_from_manifest(self, change: Any) -> list[Job]:
        """The child's rows when its event overtook the dispatcher's insert: from the manifest."""
        try:
            plan = batching.parse_manifest(self.store.get_bytes(change.parameters["manifest"]))
        except (KeyError, ValueError, TypeError):
            return []
        entries = batching.child_entries(plan, change.job_id)
        known = repository.find_documents(self.settings, {i.document_id for _, i in entries})
        repository.add_unit_rows(self.settings, [
            Job(id=rid, document_id=i.document_id, attempt=i.attempt, kind=batching.PROCESS_KIND,
                name=batching.row_name(i), status="SUBMITTED", tries=0, depends_on=[])
            for rid, i in entries if i.document_id in known])
        return repository.unit_rows(self.settings, [rid for rid, _ in entries])

    def _resubmit(self, doc: Document, rows: list[Job], defer: list | None = None) -> str | None:
        """The failed document alone, as the attempt's next try (once, whoever else sees the event).

        With ``defer``, the claimed retry is appended there for the caller to submit with others.
        """
        latest = latest_row(rows)
        if self.dispatcher is None:
            return self.finish(doc, "FAILED", ("job_failed", "The document failed and could not be resubmitted."),
                               stage_views(rows))
        if not repository.mark_resubmitted(self.settings, latest.id):
            return None
        if defer is not None:
            defer.append((latest.id, batching.Item(doc.id, doc.attempt, _try_no(latest) + 1,
                                                   batching.estimate_seconds(doc.size))))
            return None
        try:
            self.dispatcher.submit_items([batching.Item(doc.id, doc.attempt, _try_no(latest) + 1,
                                                        batching.estimate_seconds(doc.size))])
        except BaseException:
            repository.mark_resubmitted(self.settings, latest.id, undo=True)
            raise
        log.info("document %s attempt %d resubmitted alone (try %d)", doc.id, doc.attempt, _try_no(latest) + 1)
        return None

    def _submit_ranges(self, doc: Document, row: Job) -> str | None:
        """A child handed this long document over: its page-range jobs and merge job, once."""
        pages = int(((row.result or {}).get("split") or {}).get("pages") or 0)
        if self.dispatcher is None or pages < 1:
            return self.finish(doc, "FAILED", ("job_failed", "The long document could not be split into page ranges."),
                               [row])
        if not page_ranges.claim_split(self.settings, row.id):
            return None  # another delivery of the event submitted them
        try:
            self.dispatcher.submit_ranges(doc.id, doc.attempt, _try_no(row), pages)
        except BaseException:
            page_ranges.claim_split(self.settings, row.id, undo=True)
            raise
        return None

    def evaluate(self, doc: Document, defer_retries: list | None = None) -> str | None:
        if doc.status in FINAL_STATUSES:
            return None  # a late or repeated event after the decision: nothing to redo
        jobs = repository.jobs_for(self.settings, doc.id, doc.attempt)
        rows = [j for j in jobs if j.kind == batching.PROCESS_KIND]
        if rows:
            verdict = decide_rows(rows, self.settings.document_retries)
            if verdict is None:
                return None
            if verdict[0] == "RETRY":
                return self._resubmit(doc, rows, defer_retries)
            if verdict[0] == "SPLIT":
                return self._submit_ranges(doc, latest_row(rows))
            return self.finish(doc, verdict[0], verdict[1], stage_views(jobs))
        decision = decide(jobs)
        if decision is None:
            return None
        status, reason = decision
        return self.finish(doc, status, reason, jobs)

    def finish(
        self, doc: Document, status: str, reason: tuple[str, str] | None, jobs: list[Job] | None = None
    ) -> str | None:
        """Write the manifest, set the final status with its notice (once), publish."""
        jobs = jobs or []
        outputs: dict[str, str] = {}
        for j in jobs:
            if j.status == "SUCCEEDED" and j.result:
                outputs.update(j.result.get("outputs", {}))
        manifest_key = f"{self.settings.results_prefix}{doc.id}/manifest.json"
        manifest = build_manifest(doc, status, reason, jobs, outputs)
        outputs_with_manifest = {**outputs, "manifest": manifest_key}
        manifest["outputs"] = outputs_with_manifest
        self.store.put_bytes(manifest_key, json.dumps(manifest, indent=2, sort_keys=True).encode(), "application/json")
        counts = repository.counts_for(self.settings, doc.id) if status == "COMPLETED" else {}
        extract = next((j for j in jobs if j.kind == "extract" and j.result), None)
        if extract:
            counts["ocr_pages"] = extract.result.get("ocr_pages", 0)
            if extract.result.get("failed_pages"):  # pages that timed out or are damaged (pages.json says which)
                counts["failed_pages"] = len(extract.result["failed_pages"])
        payload = notice_payload(doc, status, reason, outputs_with_manifest, counts)
        notice = repository.finalize(self.settings, doc.id, doc.attempt, status, reason, payload)
        if notice is None:
            return None  # someone else finalised this attempt first
        log.info("document %s attempt %d is %s", doc.id, doc.attempt, status)
        flush_outbox(self.settings, self.notifier)
        return status


def notice_payload(
    doc: Document, status: str, reason: tuple[str, str] | None, outputs: dict[str, str], counts: dict[str, int]
) -> dict[str, Any]:
    return {
        "version": 1,
        "event_type": f"document.{status.lower()}",
        "notice_id": f"{doc.id}:{doc.attempt}",
        "document_id": doc.id,
        "attempt": doc.attempt,
        "status": status,
        "reason_code": reason[0] if reason else None,
        "outputs": outputs,
        "counts": counts,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def build_manifest(
    doc: Document, status: str, reason: tuple[str, str] | None, jobs: list[Job], outputs: dict[str, str]
) -> dict[str, Any]:
    timings: dict[str, Any] = {}
    versions: dict[str, str] = {}
    usage: dict[str, Any] = {}
    result: dict[str, Any] = {}
    renditions: dict[str, Any] = {}
    for j in jobs:
        r = j.result or {}
        timings[j.kind] = {
            "status": j.status,
            "tries": j.tries,
            "seconds": (j.stopped_at - j.started_at).total_seconds() if j.started_at and j.stopped_at else None,
            **({"stages": r["timings"]} if r.get("timings") else {}),
        }
        versions.update(r.get("tool_versions", {}))
        if r.get("usage"):  # billed service usage and estimated cost, per job kind (entities: Comprehend Medical)
            usage[j.kind] = r["usage"]
        if j.kind == "extract":
            result = r
        if j.kind == "convert" and "rendition_page" in r:  # which page the renditions show (SPEC 5.3: page 1)
            renditions = {"page": r["rendition_page"], "count": r.get("renditions")}
    return {
        "document_id": doc.id,
        "attempt": doc.attempt,
        "status": status,
        "reason_code": reason[0] if reason else None,
        "reason": reason[1] if reason else None,
        "source": {
            "bucket": doc.bucket,
            "key": doc.object_key,
            "version_id": doc.version_id,
            "etag": doc.etag,
            "size": doc.size,
            "sha256": doc.sha256,
        },
        "type": result.get("type") or ({"format": doc.file_format} if doc.file_format else None),
        "pages": doc.page_count,
        "ocr_pages": result.get("ocr_pages"),
        **({"failed_pages": result["failed_pages"]} if result.get("failed_pages") else {}),
        **({"page_ranges": result["ranges"]} if result.get("ranges") else {}),
        "language": doc.language,
        "timings": timings,
        "tool_versions": versions,
        **({"renditions": renditions} if renditions else {}),
        **({"usage": usage} if usage else {}),
        "outputs": outputs,
    }
