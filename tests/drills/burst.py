"""The burst drill on the local environment, shared by tests/test_drills_burst.py and bench/soak.py.

Every upload is stored and its S3 event dispatched before any job runs (a burst arriving at once),
through the same LocalRuntime ``medintake process`` and ``watch`` use: folder store, dispatcher,
local Batch-like compute running the real workers, tracker, SQLite outbox, notices file. The
notifier is the real file notifier with the publish moment recorded, for upload-to-notice latency.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drills.documents import percentile, write_mixed
from pipeline.notify import FileNotifier


class TimedFileNotifier(FileNotifier):
    """The file notifier, plus the monotonic time each document's notice went out."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.sent_at: dict[str, list[float]] = {}

    def publish(self, payload: dict[str, Any]) -> None:
        super().publish(payload)
        self.sent_at.setdefault(payload["document_id"], []).append(time.monotonic())


@dataclass
class BurstFigures:
    documents: int
    seconds: float
    statuses: dict[str, int]
    by_kind: dict[str, int]
    latencies: list[float] = field(repr=False)

    @property
    def per_minute(self) -> float:
        return 60 * self.documents / self.seconds

    def line(self, label: str) -> str:
        p50, p95 = percentile(self.latencies, 50), percentile(self.latencies, 95)
        return (f"{label}: {self.documents} uploads ({', '.join(f'{v} {k}' for k, v in sorted(self.by_kind.items()))}) "
                f"in {self.seconds:.1f} s = {self.per_minute:.0f} documents/min; upload-to-notice "
                f"p50 {p50:.1f} s, p95 {p95:.1f} s, max {max(self.latencies):.1f} s; "
                f"final: {dict(sorted(self.statuses.items()))}")


def rows_per_document(settings: Any) -> int:
    """Job rows of one document attempt that ran once: a row per kind, or one row (array shape)."""
    return 3 if settings.job_shape == "per_document" else 1


def check_job_rows(settings: Any, rows: list, ids: list[str]) -> None:
    """No job row doubled, none missing, every one SUCCEEDED (rows: document_id, name, status)."""
    names = Counter(r.name for r in rows)
    assert set(names.values()) == {1}, "a job row doubled"
    assert Counter(r.document_id for r in rows) == Counter({d: rows_per_document(settings) for d in ids}), \
        "a document has a job too many or too few"
    assert {r.status for r in rows} == {"SUCCEEDED"}, Counter(r.status for r in rows)


def run_local_burst(tmp: Path, count: int, workers: int = 2, max_seconds: float = 3600,
                    job_shape: str | None = None) -> tuple[BurstFigures, Any]:
    """Process ``count`` mixed uploads dispatched at once; check the end state; return the figures."""
    from sqlalchemy import func, select

    from compute.runtime import LocalRuntime
    from pipeline.database import transaction
    from pipeline.models import Document, Job, Notice, Page
    from pipeline.settings import Settings

    files = write_mixed(tmp / "inbox", count)
    settings = Settings.load(data_dir=tmp / "data", workers=workers, job_shape=job_shape)  # None: the default
    with LocalRuntime(settings) as runtime:
        notifier = TimedFileNotifier(settings.effective_notices_path)
        runtime.notifier = runtime.tracker.notifier = runtime.dispatcher.notifier = notifier
        t0 = time.monotonic()
        uploaded_at: dict[str, float] = {}
        ids = []
        for path, _ in files:
            at = time.monotonic()
            sub = runtime.submit(path)
            uploaded_at[sub.document_id] = at
            ids.append(sub.document_id)
        runtime.run_until_final(ids, max_seconds=max_seconds)
        seconds = time.monotonic() - t0
        compute_jobs = len(runtime.compute.jobs)
        retries = sum(1 for j in runtime.compute.jobs.values() if len(j.attempts) > 1)
    # ---- the end state -----------------------------------------------------------------------
    assert len(set(ids)) == count, "two files became one document"
    with transaction(settings) as s:
        statuses = dict(Counter(s.scalars(select(Document.status))))
        assert s.scalar(select(func.count()).select_from(Document)) == count
        attempts = Counter(s.scalars(select(Document.attempt)))
        rows = list(s.execute(select(Job.document_id, Job.name, Job.status)))
        notice_rows = Counter(s.scalars(select(Notice.document_id)))
        unsent = s.scalar(select(func.count()).select_from(Notice).where(Notice.sent_at.is_(None)))
        pages_per_doc = Counter(s.scalars(select(Page.document_id)))
    assert statuses == {"COMPLETED": count}, statuses
    assert attempts == {1: count}, "a document was processed twice"
    check_job_rows(settings, rows, ids)
    # One event per upload here: per_document shape, 3 Batch-like jobs each; array shape, one
    # plain job running every stage (an array of one). Not one retried.
    assert compute_jobs == count * rows_per_document(settings) and retries == 0, (compute_jobs, retries)
    assert set(notice_rows.values()) == {1} and len(notice_rows) == count and unsent == 0
    assert set(pages_per_doc.values()) == {1} and len(pages_per_doc) == count, "a page row doubled or missing"
    lines = settings.effective_notices_path.read_text().splitlines()
    published = Counter(json.loads(x)["document_id"] for x in lines)
    assert published == Counter(ids), "a document got no notice, or two"
    assert all(len(v) == 1 for v in notifier.sent_at.values()) and set(notifier.sent_at) == set(ids)
    latencies = [notifier.sent_at[d][0] - uploaded_at[d] for d in ids]
    by_kind = dict(Counter(kind for _, kind in files))
    return BurstFigures(count, seconds, statuses, by_kind, latencies), settings
