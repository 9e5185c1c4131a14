"""The dispatcher: upload event -> registered document -> job graph on the compute backend.

Runs as a Lambda on AWS and in-process locally. Idempotent on SPEC 4's document id: a duplicate
event finds the document registered and submits nothing; a submission is owned by whoever moves
the document RECEIVED -> QUEUED, so two concurrent deliveries cannot both submit. If submitting
fails, the claim is undone and the error propagates, so the event is redelivered (SQS) and retried.
Import graph: settings, events, store, database, jobdefs only; no OpenCV, Tesseract, Pillow or PDF
engine (a test asserts this), so the Lambda cold start stays small.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pipeline import repository
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

    def handle_event(self, event: dict[str, Any]) -> dict[str, Any]:
        """Dispatch every upload in ``event``; report SQS records that failed (partial batch)."""
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

    def dispatch(self, ref: UploadRef) -> DispatchResult | None:
        if not ref.key.startswith(self.settings.uploads_prefix) or ref.bucket != self.store.bucket:
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
