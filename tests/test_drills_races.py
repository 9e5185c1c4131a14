"""Race drill: on AWS the dispatcher and the tracker are concurrent Lambdas. Eight dispatcher
threads fed the same and overlapping upload events (four envelopes, each delivered twice), then
eight tracker threads fed shuffled, duplicated job state changes, on SQLite, MariaDB and
PostgreSQL: one document row per upload, one job graph, one final state and one notice each.

The compute backend is the real local compute environment (its submit only queues; nothing runs),
behind a lock because on AWS each Lambda has its own client, and Batch serialises for us.
"""
from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from compute.local import LocalComputeEnvironment
from conftest import read_notices
from pipeline import repository
from pipeline.batch_events import job_state_change_event
from pipeline.database import transaction
from pipeline.dispatcher import Dispatcher
from pipeline.events import UploadRef, eventbridge_object_created, s3_notification, sns_envelope, sqs_envelope
from pipeline.models import Document, Job
from pipeline.notify import open_notifier
from pipeline.store import open_store
from pipeline.tracker import Tracker

THREADS = 8
DOCUMENTS = 12


class SerialisedCompute:
    def __init__(self, inner: LocalComputeEnvironment) -> None:
        self.inner = inner
        self.lock = threading.Lock()
        self.submitted: list[str] = []

    def submit(self, submission):
        with self.lock:
            self.submitted.append(submission.name)
            return self.inner.submit(submission)

    def cancel(self, job_id, reason):
        with self.lock:
            self.inner.cancel(job_id, reason)


def _events_for(ref: UploadRef, n: int) -> list[dict]:
    body = s3_notification(ref)
    shapes = [body, sqs_envelope(body, message_id=f"m-{n}"), sns_envelope(body, message_id=f"s-{n}"),
              eventbridge_object_created(ref, event_id=f"e-{n}")]
    return shapes * 2  # S3, SNS, SQS and EventBridge all deliver at least once


def test_concurrent_dispatchers_and_trackers_agree(db_settings):
    settings = db_settings.replace(compute_backend="local")
    store = open_store(settings)
    refs = []
    for i in range(DOCUMENTS):
        key = f"{settings.uploads_prefix}race/{i:02d}.pdf"
        store.put_bytes(key, b"%PDF-1.4\n% race drill\n", "application/pdf")
        refs.append(UploadRef(store.bucket, key, None, f"etag{i:04d}", 24))
    events = [e for n, ref in enumerate(refs) for e in _events_for(ref, n)]
    compute = SerialisedCompute(LocalComputeEnvironment(settings, listeners=[]))
    notifier = open_notifier(settings)
    start = threading.Barrier(THREADS)

    def dispatch_all(seed: int) -> int:
        dispatcher = Dispatcher(settings, compute, store, notifier)
        mine = list(events)
        random.Random(seed).shuffle(mine)
        start.wait()
        failures = 0
        for event in mine:
            failures += len(dispatcher.handle_event(event)["batchItemFailures"])
        return failures

    t0 = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        failures = sum(pool.map(dispatch_all, range(THREADS)))
    dispatch_seconds = time.perf_counter() - t0
    assert failures == 0
    # One document row per upload, one graph of three jobs each, submitted once.
    with transaction(settings) as s:
        assert s.scalar(select(func.count()).select_from(Document)) == DOCUMENTS
        per_doc = dict(s.execute(select(Job.document_id, func.count()).group_by(Job.document_id)).all())
    assert per_doc == {ref.document_id: 3 for ref in refs}
    assert len(compute.submitted) == len(set(compute.submitted)) == 3 * DOCUMENTS

    # Every job succeeds; each state change delivered twice, shuffled, to eight trackers.
    changes = []
    for ref in refs:
        for job in repository.jobs_for(settings, ref.document_id, 1):
            described = compute.inner.describe(job.id)
            for status in ("RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED"):
                detail = {**described, "status": status,
                          "attempts": [{"container": {"exitCode": 0}}] if status == "SUCCEEDED" else []}
                changes.extend([job_state_change_event(detail)] * 2)
    tracker_start = threading.Barrier(THREADS)
    decided: list[str] = []
    decided_lock = threading.Lock()

    def track_all(seed: int) -> None:
        tracker = Tracker(settings, store, notifier)
        mine = list(changes)
        random.Random(100 + seed).shuffle(mine)
        tracker_start.wait()
        for event in mine:
            status = tracker.handle(event)
            if status:
                with decided_lock:
                    decided.append(status)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(track_all, range(THREADS)))
    track_seconds = time.perf_counter() - t0
    # Out of order, a SUCCEEDED can arrive before RUNNING: it still decides once per document.
    assert decided == ["COMPLETED"] * DOCUMENTS
    assert {repository.get_document(settings, r.document_id).status for r in refs} == {"COMPLETED"}
    notices = read_notices(settings)
    assert sorted(n["document_id"] for n in notices) == sorted(r.document_id for r in refs)
    assert len({n["notice_id"] for n in notices}) == DOCUMENTS
    dialect = settings.effective_database_url.split(":", 1)[0]
    print(f"\nrace drill ({dialect}): {len(events) * THREADS} dispatch deliveries in {dispatch_seconds:.2f} s, "
          f"{len(changes) * THREADS} state changes in {track_seconds:.2f} s by {THREADS} threads each; "
          f"{DOCUMENTS} documents, {len(compute.submitted)} submissions, {len(notices)} notices")
