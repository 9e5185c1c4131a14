"""The dispatcher: upload event -> registered document -> job graph on the compute backend.

Runs as a Lambda on AWS and in-process locally. Idempotent on SPEC 4's document id: a duplicate
event finds the document registered and submits nothing; a submission is owned by whoever moves
the document RECEIVED -> QUEUED, so two concurrent deliveries cannot both submit. If submitting
fails, the claim is undone and the error propagates, so the event is redelivered (SQS) and retried.
Import graph: settings, events, store, database, jobdefs only; no OpenCV, Tesseract, Pillow or PDF
engine (a test asserts this), so the Lambda cold start stays small.

Two shapes (``Settings.job_shape``, docs/scale.md): ``per_document`` submits three jobs per
document (extract, then entities and convert); ``array`` turns a whole event (an SQS batch of up
to 10,000 messages) into ONE array job whose children each run every stage for a slice of the
documents (pipeline/batching.py), so a burst costs one SubmitJob per batch instead of three per
document.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pipeline import batching, page_ranges, repository
from pipeline.compute_api import ComputeEnvironment, JobSubmission
from pipeline.errors import RejectedInput
from pipeline.events import UploadRef, parse_event
from pipeline.jobdefs import GRAPH, load_job_definitions
from pipeline.models import Job
from pipeline.notify import Notifier
from pipeline.settings import Settings
from pipeline.store import Store, safe_relative_path

log = logging.getLogger("medintake.dispatcher")


@dataclass(frozen=True)
class DispatchResult:
    document_id: str
    created: bool
    submitted: bool
    status: str


class Dispatcher:
    def __init__(self, settings: Settings, compute: ComputeEnvironment, store: Store, notifier: Notifier) -> None:
        self.settings = settings
        self.compute = compute
        self.store = store
        self.notifier = notifier
        self._processing_queue: Any = None  # design E: the processing Lambda's queue, made on first use

    def handle_event(self, event: dict[str, Any]) -> dict[str, Any]:
        """Dispatch every upload in ``event``; report SQS records that failed (partial batch)."""
        if self.settings.job_shape == "array":
            return self._handle_batch(event)
        failures: list[dict[str, str]] = []
        results: list[DispatchResult] = []
        for record in parse_event(event):
            try:
                if record.error:
                    raise ValueError(record.error)
                results.extend(self.dispatch(ref) for ref in record.uploads)
            except Exception as exc:
                if record.record_id is None:
                    raise
                log.warning("record failed (%s); reported for redelivery", type(exc).__name__)
                failures.append({"itemIdentifier": record.record_id})
        return {"batchItemFailures": failures, "results": results}

    def _handle_batch(self, event: dict[str, Any]) -> dict[str, Any]:
        """The array shape: register and claim every upload of the event, then one array job.

        A record whose uploads could not be registered fails alone; if the array job cannot be
        submitted, every record that contributed a document fails (their claims are undone), so
        SQS redelivers them and a later batch takes them.
        """
        failed: list[str] = []
        results: list[DispatchResult] = []
        contributed: dict[str, list[str]] = {}  # document id -> record ids
        items: dict[str, batching.Item] = {}
        records = list(parse_event(event))
        refs: list[tuple[Any, UploadRef]] = []
        for record in records:
            if record.error:
                if record.record_id is None:
                    raise ValueError(record.error)
                failed.append(record.record_id)
                continue
            refs.extend((record, ref) for ref in record.uploads if self._ours(ref))
        try:
            registered = repository.register_documents(self.settings, [ref for _, ref in refs])
        except Exception as exc:
            if any(r.record_id is None for r in records):
                raise
            log.warning("batch registration failed (%s); every record reported for redelivery", type(exc).__name__)
            return {"batchItemFailures": [{"itemIdentifier": r.record_id} for r in records], "results": []}
        for (record, ref), (doc, created) in zip(refs, registered):
            if doc.status != "RECEIVED":
                results.append(DispatchResult(doc.id, created, False, doc.status))
                continue
            try:
                safe_relative_path(ref.key)
            except RejectedInput as exc:
                self._reject_unsubmitted(doc.id, doc.attempt, exc)
                results.append(DispatchResult(doc.id, created, False, "REJECTED"))
                continue
            contributed.setdefault(doc.id, []).append(record.record_id)
            items[doc.id] = batching.Item(doc.id, doc.attempt, 1, batching.estimate_seconds(doc.size or ref.size))
        won = repository.claim_many(self.settings, {i.document_id: i.attempt for i in items.values()},
                                    "RECEIVED", "QUEUED")
        mine = [i for i in items.values() if i.document_id in won]
        to_lambda = self._to_processing_lambda(mine)
        mine = [i for i in mine if i.document_id not in to_lambda]
        if mine:
            try:
                self.submit_items(mine)
            except Exception as exc:
                repository.claim_many(self.settings, {i.document_id: i.attempt for i in mine}, "QUEUED", "RECEIVED")
                ids = [rid for i in mine for rid in contributed[i.document_id]]
                if any(rid is None for rid in ids):
                    raise
                log.warning("array job not submitted (%s); %d records reported for redelivery",
                            type(exc).__name__, len(set(ids)))
                failed.extend(ids)
                mine = []
        for item in items.values():
            submitted = item in mine or item.document_id in to_lambda
            results.append(DispatchResult(item.document_id, True, submitted, "QUEUED" if submitted else "RECEIVED"))
        unique_failed = list(dict.fromkeys(failed))
        return {"batchItemFailures": [{"itemIdentifier": r} for r in unique_failed], "results": results}

    def _ours(self, ref: UploadRef) -> bool:
        return ref.key.startswith(self.settings.uploads_prefix) and ref.bucket == self.store.bucket

    def dispatch(self, ref: UploadRef) -> DispatchResult | None:
        if not self._ours(ref):
            return None  # our own results, or another bucket's objects: never processed
        doc, created = repository.register_document(self.settings, ref)
        if doc.status != "RECEIVED":
            return DispatchResult(doc.id, created, False, doc.status)
        try:
            safe_relative_path(ref.key)
        except RejectedInput as exc:
            self._reject_unsubmitted(doc.id, doc.attempt, exc)
            return DispatchResult(doc.id, created, False, "REJECTED")
        submitted = self.submit_graph(doc.id, doc.attempt)
        return DispatchResult(doc.id, created, submitted, "QUEUED" if submitted else doc.status)

    def submit_graph(self, doc_id: str, attempt: int) -> bool:
        """Submit the document attempt's jobs if this caller wins the RECEIVED -> QUEUED claim.

        Batch's SubmitJob has no idempotency token, so a submission that fails half-way must not
        leave work behind that a redelivery would duplicate: the jobs this call submitted are
        terminated and their rows retired (attempt 0, ignored by the tracker) before the claim is
        undone; a job that could not be terminated keeps its row and is reused, by job name, when
        the event is redelivered.
        """
        if not repository.claim(self.settings, doc_id, attempt, "RECEIVED", "QUEUED"):
            return False
        if self.settings.job_shape == "array":  # an array of one: a plain job running every stage
            try:
                doc = repository.get_document(self.settings, doc_id)
                self.submit_items([batching.Item(doc_id, attempt, 1, batching.estimate_seconds(doc.size))])
            except BaseException:
                repository.claim(self.settings, doc_id, attempt, "QUEUED", "RECEIVED")
                raise
            return True
        existing = {j.name: j for j in repository.jobs_for(self.settings, doc_id, attempt)}
        ids: dict[str, str] = {}
        submitted: list[str] = []
        try:
            definitions = load_job_definitions(self.settings.job_definitions_dir)
            for kind in _topological(GRAPH):
                name = f"medintake-{kind}-{doc_id}-a{attempt}"
                if name in existing:  # left running by an earlier, half-failed submission
                    ids[kind] = existing[name].id
                    continue
                sub = JobSubmission(
                    name=name,
                    kind=kind,
                    definition=definitions[kind],
                    parameters={"document_id": doc_id, "attempt": str(attempt)},
                    depends_on=tuple(ids[d] for d in GRAPH[kind]),
                    tags={"app": "medintake", "document-id": doc_id, "job-kind": kind},
                )
                ids[kind] = self.compute.submit(sub)
                submitted.append(ids[kind])
                repository.add_job(
                    self.settings,
                    Job(id=ids[kind], document_id=doc_id, attempt=attempt, kind=kind, name=sub.name,
                        status="SUBMITTED", tries=0, depends_on=list(sub.depends_on)),
                )
        except BaseException:
            self._undo(doc_id, attempt, list(ids.values()))
            raise
        log.info("document %s attempt %d queued (%d jobs, %d submitted now)", doc_id, attempt, len(ids), len(submitted))
        return True

    def _to_processing_lambda(self, items: list[batching.Item]) -> set[str]:
        """Design E: send small documents to the processing Lambda while its queue is short.

        Returns the ids sent; the others (too large, over the queue's limit, or a send that failed)
        stay for the array job. The rows are written after the send: the function creates its row
        itself if it starts first.
        """
        from pipeline import processing

        if not processing.enabled(self.settings) or not items:
            return set()
        small = [i for i in items if i.seconds <= self.settings.lambda_max_seconds]
        if not small:
            return set()
        queue = self._processing_queue or processing.ProcessingQueue(self.settings)
        self._processing_queue = queue
        take = small[:queue.free_slots()]
        entries = [(processing.lambda_row_id(), i) for i in take]
        sent = queue.send(entries)
        rows = [Job(id=rid, document_id=i.document_id, attempt=i.attempt, kind=batching.PROCESS_KIND,
                    name=batching.row_name(i), status="SUBMITTED", tries=0, depends_on=[])
                for rid, i in entries if rid in sent]
        try:
            repository.add_unit_rows(self.settings, rows)
        except Exception as exc:  # the function writes its row itself
            log.warning("rows of documents sent to the processing Lambda not written (%s)", type(exc).__name__)
        if rows:
            log.info("%d small document(s) sent to the processing Lambda", len(rows))
        return {r.document_id for r in rows}

    def submit_ranges(self, document_id: str, attempt: int, tries: int, pages: int) -> str:
        """A long document's page-range jobs and its merge job (pipeline/page_ranges.py).

        The plan (ranges, output prefix) is written before SubmitJob, as a manifest is; one
        ``pages`` array job (one child per range) and one ``process`` job for the document alone
        that dependsOn it and merges. If the merge job cannot be submitted, the range job is
        terminated and the error propagates (the tracker gives its claim back; the event is
        redelivered). Returns the merge job's id.
        """
        s = self.settings
        ranges = page_ranges.plan_ranges(pages, s.split_pages)
        key = page_ranges.plan_key(s.results_prefix, document_id, attempt, tries)
        source = repository.get_document(s, document_id).object_key
        self.store.put_bytes(key, page_ranges.plan_body(s.results_prefix, document_id, attempt, pages, ranges, source),
                             "application/json")
        definitions = load_job_definitions(s.job_definitions_dir)
        ranges_job = self.compute.submit(JobSubmission(
            name=page_ranges.job_name(document_id, attempt, tries),
            kind=page_ranges.PAGES_KIND,
            definition=definitions[page_ranges.PAGES_KIND],
            parameters={"plan": key},
            array_size=len(ranges) if len(ranges) > 1 else None,
            tags={"app": "medintake", "job-kind": page_ranges.PAGES_KIND},
        ))
        try:
            merge = self.submit_items([batching.Item(document_id, attempt, tries, ranges=key)], per_child=1,
                                      depends_on=(ranges_job,))
        except BaseException:
            try:
                self.compute.cancel(ranges_job, "medintake: the merge job of these page ranges was not submitted")
            except Exception as exc:  # its outputs are keyed by range: a later try reuses them
                log.warning("could not terminate a page-range job (%s)", type(exc).__name__)
            raise
        log.info("document %s attempt %d: %d pages in %d ranges, merged by one job", document_id, attempt,
                 pages, len(ranges))
        return merge

    def submit_items(self, items: list[batching.Item], per_child: int | None = None,
                     depends_on: tuple[str, ...] = ()) -> str:
        """One job for these claimed document attempts: an array job, or a plain job for one slice.

        The manifest (slices of document id, attempt, try) is written before SubmitJob so that a
        child, the tracker or a redelivery can always read its assignment; the rows are inserted
        after, and created from the manifest by whoever needs them first if this insert is late
        or fails. ``per_child`` overrides the slice size (the tracker's retries: 1, each alone).
        Returns the job id.
        """
        s = self.settings
        if per_child is None and s.compute_backend == "local":
            # No container start to amortise on one machine: one child per worker slot at least.
            per_child = max(1, min(s.array_child_documents, -(-len(items) // s.effective_workers)))
        plan = batching.slices(items, per_child or s.array_child_documents, s.array_child_seconds)
        batch_id = batching.new_batch_id()
        key = batching.manifest_key(s.results_prefix, batch_id)
        self.store.put_bytes(key, batching.manifest_body(batch_id, plan), "application/json")
        definitions = load_job_definitions(s.job_definitions_dir)
        sub = JobSubmission(
            name=batching.job_name(batch_id, plan),
            kind=batching.PROCESS_KIND,
            definition=definitions[batching.PROCESS_KIND],
            parameters=batching.plan_parameters(key, plan),
            array_size=len(plan) if len(plan) > 1 else None,
            depends_on=tuple(depends_on),
            tags={"app": "medintake", "job-kind": batching.PROCESS_KIND},
        )
        job_id = self.compute.submit(sub)
        rows = []
        for index, child in enumerate(plan):
            unit = f"{job_id}:{index}" if sub.array_size else job_id
            for pos, item in enumerate(child):
                rows.append(Job(id=batching.row_id(unit, pos), document_id=item.document_id, attempt=item.attempt,
                                kind=batching.PROCESS_KIND, name=batching.row_name(item), status="SUBMITTED",
                                tries=0, depends_on=[]))
        try:
            repository.add_unit_rows(s, rows)
        except Exception as exc:  # the manifest has it all: the tracker and the worker create them
            log.warning("rows of a submitted job not written (%s); left to the manifest", type(exc).__name__)
        log.info("%d document(s) queued in one job of %d child(ren)", len(items), len(plan))
        return job_id

    def _undo(self, doc_id: str, attempt: int, job_ids: list[str]) -> None:
        """Terminate what was submitted, retire what was terminated, then give the claim back."""
        terminated = []
        for job_id in job_ids:
            try:
                self.compute.cancel(job_id, "medintake: the document's job graph was not fully submitted")
                terminated.append(job_id)
            except Exception as exc:  # kept: reused by name on redelivery
                log.warning("could not terminate a job of a half-submitted graph (%s)", type(exc).__name__)
        try:
            repository.retire_jobs(self.settings, doc_id, terminated)
        finally:
            repository.claim(self.settings, doc_id, attempt, "QUEUED", "RECEIVED")

    def _reject_unsubmitted(self, doc_id: str, attempt: int, exc: RejectedInput) -> None:
        from pipeline.tracker import Tracker

        doc = repository.get_document(self.settings, doc_id)
        Tracker(self.settings, self.store, self.notifier).finish(doc, "REJECTED", (exc.reason_code, exc.message))


def _topological(graph: dict[str, tuple[str, ...]]) -> list[str]:
    done: list[str] = []
    while len(done) < len(graph):
        for kind, deps in graph.items():
            if kind not in done and all(d in done for d in deps):
                done.append(kind)
    return done
