"""Reprocessing: pick documents by ids or filters, then give each a new attempt on the compute backend.

``medintake reprocess`` is a thin shell over this module, so that the selection and the loop can be
tested without a terminal and run against either compute environment: the caller passes the
dispatcher (whose compute backend is the local worker pool or AWS Batch) and, for Batch, the token
bucket its submissions already go through.

Rules, and why:

- Same document id, a new attempt. The attempt number is what the tracker keys final states and
  notices on, so a new attempt gets exactly one notice of its own, and late events of the old one
  are ignored. Outputs are replaced by the jobs themselves (each job replaces its rows and files).
- A selection is read before it is acted on; each document is restarted only if it is still at
  the attempt that was selected (``repository.start_attempt_if_unchanged``), so a document the
  tracker or another operator moved on meanwhile is skipped, never started twice.
- Stuck documents (not final, no activity for ``stuck_after``) have jobs that may still exist on
  the backend (a Batch job sitting in RUNNABLE for hours). Those are terminated through the
  backend's ``cancel`` *before* the new attempt starts, and a document whose old jobs cannot be
  terminated is not restarted: two graphs of one document must never run at once.
- A graph that cannot be submitted is undone by the dispatcher (its jobs terminated), and the
  document is put back at its previous attempt so the same command can simply be run again; the
  loop stops there, because a backend that refuses one submission usually refuses the next.
- Nothing here prints or logs object keys (they may hold a patient's name): ids and codes only.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable

from sqlalchemy import or_, select as sql_select

from pipeline import repository
from pipeline.batch_events import TERMINAL
from pipeline.database import transaction
from pipeline.models import FINAL_STATUSES, Document, Job, utcnow
from pipeline.settings import Settings

log = logging.getLogger("medintake.reprocess")

STATUS_FILTERS = ("failed", "rejected", "stuck", "completed")
IN_FLIGHT = ("RECEIVED", "QUEUED", "PROCESSING")
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
_CHUNK = 500  # ids per IN (...) list: well under every database's parameter limit


def parse_duration(text: str) -> timedelta:
    """'90s', '30m', '2h', '3d', '1w' -> timedelta. Raises ValueError with a usable message."""
    m = _RELATIVE.match(text or "")
    if not m:
        raise ValueError(f"{text!r} is not a duration like 30m, 2h or 3d")
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 time (UTC when it names no zone) or a relative one ('2h' = two hours ago)."""
    now = now or utcnow()
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is neither an ISO time (2026-11-28T09:00) nor a relative one (2h, 3d)") \
            from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands timezone-aware columns back naive; every time we store is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


@dataclass(frozen=True)
class Filters:
    """What to reprocess. Ids and filters combine (AND); statuses among themselves are OR.

    Without ``statuses``, ids select any final document, or one that is stuck; one of the two
    (ids or statuses) is required, so that a bare ``--prefix`` cannot select everything.
    ``since``/``until`` bound the time the document last changed (for a final document: when it
    reached its status), which is what an operator reads off an incident's timeline.
    """

    document_ids: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    prefix: str | None = None
    stuck_after: timedelta = timedelta(hours=1)
    now: datetime | None = None  # tests pin the clock; default: now

    def __post_init__(self) -> None:
        unknown = set(self.statuses) - set(STATUS_FILTERS)
        if unknown:
            raise ValueError(f"unknown status filter(s): {', '.join(sorted(unknown))}")
        if not self.document_ids and not self.statuses:
            raise ValueError("give document ids or --status (failed, rejected, stuck, completed)")


@dataclass(frozen=True)
class Candidate:
    """One selected document, as it was when selected (the attempt is the guard when acting)."""

    document_id: str
    status: str
    attempt: int
    reason_code: str | None
    updated_at: datetime
    stuck: bool = False
    open_jobs: tuple[str, ...] = ()  # unfinished jobs of the current attempt: terminated first
    reason_message: str | None = None

    @property
    def next_attempt(self) -> int:
        return self.attempt + 1


@dataclass
class Selection:
    documents: list[Candidate] = field(default_factory=list)
    # Named by id but not eligible (in flight and not stuck): reported, never started.
    ineligible: list[Candidate] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # ids with no document


@dataclass(frozen=True)
class Outcome:
    """What happened to one candidate. ``action``: submitted | skipped | error | not-started."""

    candidate: Candidate
    action: str
    attempt: int  # the new attempt when submitted, else the one the document was at
    terminated: tuple[str, ...] = ()
    detail: str | None = None  # PHI-free sentence for skipped/error


def _chunks(items: list[str], size: int = _CHUNK) -> Iterable[list[str]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _last_activity(settings: Settings, docs: list[Document]) -> dict[str, tuple[datetime, tuple[str, ...]]]:
    """For in-flight documents: (latest change of the document or its current jobs, unfinished jobs).

    A job that is still making progress records state changes, so a document is only stuck when
    neither it nor any job of its current attempt changed for ``stuck_after``.
    """
    out: dict[str, tuple[datetime, tuple[str, ...]]] = {d.id: (_aware(d.updated_at), ()) for d in docs}
    attempts = {d.id: d.attempt for d in docs}
    with transaction(settings) as s:
        for ids in _chunks(list(attempts)):
            for job in s.scalars(sql_select(Job).where(Job.document_id.in_(ids)).order_by(Job.created_at)):
                if job.attempt != attempts[job.document_id]:
                    continue
                latest, open_jobs = out[job.document_id]
                seen = max(t for t in (_aware(job.updated_at), _aware(job.created_at), latest) if t is not None)
                if job.status not in TERMINAL:
                    open_jobs = (*open_jobs, job.id)
                out[job.document_id] = (seen, open_jobs)
    return out


def select(settings: Settings, filters: Filters) -> Selection:
    """The documents ``filters`` name, oldest change first. Reads only; changes nothing."""
    now = filters.now or utcnow()
    cutoff = now - filters.stuck_after
    wanted = set(filters.statuses)
    final_wanted = [s.upper() for s in wanted if s != "stuck"]
    conditions: list[Any] = []
    if filters.reasons:
        conditions.append(Document.reason_code.in_(list(filters.reasons)))
    if filters.since is not None:
        conditions.append(Document.updated_at >= filters.since)
    if filters.until is not None:
        conditions.append(Document.updated_at < filters.until)
    if filters.prefix:
        conditions.append(Document.object_key.startswith(filters.prefix, autoescape=True))
    if wanted:
        either = [Document.status.in_(final_wanted)] if final_wanted else []
        if "stuck" in wanted:
            either.append(Document.status.in_(IN_FLIGHT) & (Document.updated_at < cutoff))
        conditions.append(or_(*either))

    rows: list[Document] = []
    with transaction(settings) as s:
        if filters.document_ids:
            ids = list(dict.fromkeys(filters.document_ids))
            for chunk in _chunks(ids):
                rows.extend(s.scalars(sql_select(Document).where(Document.id.in_(chunk), *conditions)))
            found = {d.id for d in rows}
            # Ids the filters excluded are not "missing": only ids with no document at all are.
            present: set[str] = set()
            for chunk in _chunks([i for i in ids if i not in found]):
                present.update(s.scalars(sql_select(Document.id).where(Document.id.in_(chunk))))
            missing = [i for i in ids if i not in found and i not in present]
        else:
            rows = list(s.scalars(sql_select(Document).where(*conditions)))
            missing = []

    activity = _last_activity(settings, [d for d in rows if d.status in IN_FLIGHT])
    selection = Selection(missing=missing)
    for d in sorted(rows, key=lambda d: (_aware(d.updated_at), d.id)):
        base = dict(document_id=d.id, status=d.status, attempt=d.attempt, reason_code=d.reason_code,
                    updated_at=_aware(d.updated_at), reason_message=d.reason_message)
        if d.status in FINAL_STATUSES:
            selection.documents.append(Candidate(**base))
            continue
        latest, open_jobs = activity[d.id]
        candidate = Candidate(**base, stuck=latest < cutoff, open_jobs=open_jobs)
        if candidate.stuck and (not wanted or "stuck" in wanted):
            selection.documents.append(candidate)
        else:  # in flight and making progress (or named by id without --status stuck)
            selection.ineligible.append(candidate)
    return selection


def reprocess(
    settings: Settings,
    dispatcher: Any,
    candidates: list[Candidate],
    limiter: Any = None,
    on_progress: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Start a new attempt of each candidate and submit its graph through ``dispatcher``.

    ``dispatcher.compute`` is the backend (its ``submit`` takes the SubmitJob token itself on
    Batch); ``limiter``, when given, also paces the TerminateJob calls made for stuck documents,
    so this process as a whole stays one submitter at ``submit_rate``. Returns one outcome per
    candidate, in order; ``on_progress`` is called after each.
    """
    outcomes: list[Outcome] = []
    stopped: str | None = None
    for cand in candidates:
        if stopped is not None:
            outcome = Outcome(cand, "not-started", cand.attempt, detail=stopped)
        else:
            outcome = _one(settings, dispatcher, cand, limiter)
            if outcome.action == "error":
                stopped = "not started: an earlier submission failed; run the command again"
        outcomes.append(outcome)
        if on_progress is not None:
            on_progress(outcome)
    return outcomes


def _one(settings: Settings, dispatcher: Any, cand: Candidate, limiter: Any) -> Outcome:
    terminated: list[str] = []
    if cand.status not in FINAL_STATUSES:
        # Terminate the old attempt's unfinished jobs first: if one cannot be terminated it may
        # still run, so the document is not restarted (that would run its work twice).
        reason = f"medintake reprocess: replaced by attempt {cand.next_attempt}"
        # Array shape: a row is <child or plain job id>#<position>; the job to stop is the child.
        # Its batch mates are not lost: the child ends FAILED and the tracker resubmits them alone.
        for job_id in dict.fromkeys(j.split("#", 1)[0] for j in cand.open_jobs):
            if limiter is not None:
                limiter.acquire()
            try:
                dispatcher.compute.cancel(job_id, reason)
            except Exception as exc:
                log.warning("document %s: could not terminate job %s (%s)", cand.document_id, job_id,
                            type(exc).__name__)
                return Outcome(cand, "error", cand.attempt, tuple(terminated),
                               f"an old job could not be terminated ({type(exc).__name__}); not restarted")
            terminated.append(job_id)
    attempt = repository.start_attempt_if_unchanged(settings, cand.document_id, cand.attempt,
                                                    final_only=cand.status in FINAL_STATUSES)
    if not attempt:
        return Outcome(cand, "skipped", cand.attempt, tuple(terminated),
                       "the document changed since it was selected")
    try:
        submitted = dispatcher.submit_graph(cand.document_id, attempt)
    except BaseException as exc:
        previous = Document(id=cand.document_id, attempt=cand.attempt, status=cand.status,
                            reason_code=cand.reason_code, reason_message=cand.reason_message,
                            updated_at=cand.updated_at)
        repository.restore_attempt(settings, cand.document_id, attempt, previous)
        if not isinstance(exc, Exception):
            raise  # Ctrl-C: the document is back as it was; stop here
        log.warning("document %s: submission failed (%s)", cand.document_id, type(exc).__name__)
        message = getattr(exc, "message", None) or type(exc).__name__
        return Outcome(cand, "error", cand.attempt, tuple(terminated), f"submission failed: {message}")
    if not submitted:  # someone else claimed the new attempt: it is theirs to submit
        return Outcome(cand, "skipped", attempt, tuple(terminated), "another process submitted it")
    log.info("document %s: attempt %d submitted", cand.document_id, attempt)
    return Outcome(cand, "submitted", attempt, tuple(terminated))
