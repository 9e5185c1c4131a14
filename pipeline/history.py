"""What happened to documents and jobs, from our own database: `medintake documents` and `jobs show`.

AWS Batch forgets finished jobs after about a day, so the history an operator needs (which
documents failed, how each attempt went, how long the stages took) is read from our rows: the
documents, the jobs of every attempt, the job state changes the tracker recorded (``events``), the
job results the workers saved, notices, and the page/entity/rendition counts. Reads only.

Everything returned is plain data (dataclasses of str/int/float/datetime, or dicts), so the CLI
can print a table or JSON and tests can compare values without an open session.

PHI: the object key (it may hold a patient's name) and the extracted text are left out unless the
caller asks with ``show_phi``; filtering on a key prefix matches the key but never returns it.
Entity values are never returned, only counts. Reason messages, status reasons and job results are
PHI-free by construction (pipeline/errors.py; workers record codes, counts and timings).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, select

from pipeline.database import transaction
from pipeline.errors import ExitCode, MedintakeError
from pipeline.models import DOCUMENT_STATUSES, FINAL_STATUSES, Document, Job, JobEvent, Notice
from pipeline.settings import Settings

DEFAULT_LIMIT = 50
TEXT_EXCERPT_CHARS = 500


class JobNotFound(MedintakeError):
    """No job with that id is recorded in the database (exit 2, like an unknown document)."""

    exit_code = ExitCode.USAGE
    fix = "Check the id (`medintake documents show DOC_ID` lists the jobs of every attempt)."


def aware(value: datetime | None) -> datetime | None:
    """SQLite and MySQL hand timezone-aware columns back naive; every time we store is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def seconds_between(start: datetime | None, stop: datetime | None) -> float | None:
    if start is None or stop is None:
        return None
    return round((aware(stop) - aware(start)).total_seconds(), 3)


def to_json(value: Any) -> Any:
    """Dataclasses, datetimes (ISO 8601, UTC) and containers of them as JSON-ready values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return aware(value).isoformat(timespec="seconds")
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


# ---- documents list ------------------------------------------------------------------------------
@dataclass(frozen=True)
class DocumentFilters:
    """Statuses among themselves are OR; everything else combines with AND.

    ``since``/``until`` bound when the document last changed (a final document: when it reached
    its status), as `medintake reprocess` does, so the same filters list what it would pick.
    """

    statuses: tuple[str, ...] = ()  # any case; DOCUMENT_STATUSES
    reasons: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    prefix: str | None = None
    limit: int = DEFAULT_LIMIT

    def __post_init__(self) -> None:
        unknown = {s.upper() for s in self.statuses} - set(DOCUMENT_STATUSES)
        if unknown:
            raise ValueError(f"unknown status(es): {', '.join(sorted(unknown))}")
        if self.limit < 1:
            raise ValueError("limit must be at least 1")


@dataclass(frozen=True)
class DocumentRow:
    document_id: str
    status: str
    attempt: int
    reason_code: str | None
    format: str | None
    pages: int | None
    created_at: datetime
    updated_at: datetime
    # Final documents: from the current attempt's first job to the final state; else None.
    duration_seconds: float | None
    object_key: str | None = None  # only with show_phi


@dataclass
class DocumentPage:
    rows: list[DocumentRow]
    total: int  # how many matched, before the limit


def list_documents(settings: Settings, filters: DocumentFilters, show_phi: bool = False) -> DocumentPage:
    """Documents matching ``filters``, most recently changed first, at most ``filters.limit``."""
    conditions: list[Any] = []
    if filters.statuses:
        conditions.append(Document.status.in_(sorted({s.upper() for s in filters.statuses})))
    if filters.reasons:
        conditions.append(Document.reason_code.in_(list(filters.reasons)))
    if filters.since is not None:
        conditions.append(Document.updated_at >= filters.since)
    if filters.until is not None:
        conditions.append(Document.updated_at < filters.until)
    if filters.prefix:
        conditions.append(Document.object_key.startswith(filters.prefix, autoescape=True))
    from pipeline.review.collect import _no_database

    if _no_database(settings):  # a data folder never used: nothing to list, and no database made
        return DocumentPage(rows=[], total=0)
    attempt_start = (select(func.min(Job.created_at))
                     .where(Job.document_id == Document.id, Job.attempt == Document.attempt)
                     .scalar_subquery())
    columns = [Document.id, Document.status, Document.attempt, Document.reason_code, Document.file_format,
               Document.page_count, Document.created_at, Document.updated_at, attempt_start]
    if show_phi:
        columns.append(Document.object_key)
    with transaction(settings) as s:
        total = s.scalar(select(func.count()).select_from(Document).where(*conditions)) or 0
        found = s.execute(select(*columns).where(*conditions)
                          .order_by(Document.updated_at.desc(), Document.id.desc()).limit(filters.limit)).all()
    rows = []
    for r in found:
        final = r[1] in FINAL_STATUSES
        rows.append(DocumentRow(
            document_id=r[0], status=r[1], attempt=r[2], reason_code=r[3], format=r[4], pages=r[5],
            created_at=aware(r[6]), updated_at=aware(r[7]),
            duration_seconds=seconds_between(r[8] or r[6], r[7]) if final else None,
            object_key=r[9] if show_phi else None,
        ))
    return DocumentPage(rows=rows, total=total)


# ---- documents show ------------------------------------------------------------------------------
@dataclass(frozen=True)
class JobSummary:
    job_id: str
    attempt: int  # the document attempt (0: retired from a half-submitted graph)
    kind: str
    status: str
    tries: int
    exit_code: int | None
    status_reason: str | None
    reason_code: str | None
    created_at: datetime | None
    started_at: datetime | None
    stopped_at: datetime | None
    duration_seconds: float | None
    # The array shape (kind "process"): the Batch job that ran the document (an array job's id,
    # or a plain job's), the child's index in it, the document's position in the child's slice,
    # and the try of the document attempt (1, then 2.. when the document was resubmitted alone).
    batch_job_id: str | None = None
    array_index: int | None = None
    position: int | None = None
    document_try: int | None = None


@dataclass(frozen=True)
class RowPlace:
    """Where an array-shape row ran: ``<unit>#<position>``, the unit ``<parent>:<index>`` or plain."""

    unit_job_id: str  # the child (or plain job) whose log and state changes are the document's
    batch_job_id: str  # the array job (or the plain job)
    array_index: int | None  # None for a plain job
    position: int
    document_try: int | None


def row_place(job_id: str, kind: str, name: str | None = None) -> RowPlace | None:
    """The place of an array-shape row from its id and name (both hold it); None for other rows."""
    from pipeline.batching import PROCESS_KIND

    unit, sep, pos = job_id.rpartition("#")
    if kind != PROCESS_KIND or not sep or not pos.isdigit():
        return None
    parent, colon, index = unit.rpartition(":")
    is_child = bool(colon) and index.isdigit()
    tries = (name or "").rpartition("-t")[2]
    return RowPlace(unit_job_id=unit, batch_job_id=parent if is_child else unit,
                    array_index=int(index) if is_child else None, position=int(pos),
                    document_try=int(tries) if tries.isdigit() else None)


def stage_rows(result: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """An array-shape row's result as per-stage entries {stage: {"seconds", "stages"}}, in run order.

    The child records each stage's result (with its sub-stage ``timings``) under ``stages`` and
    its wall seconds under ``seconds``; rows written before ``seconds`` existed have None there.
    """
    result = result or {}
    seconds = result.get("seconds") or {}
    done = result.get("stages") or {}
    # A stage that raised has seconds and no result: it is where the document stopped (FAILED).
    return {kind: {"status": "SUCCEEDED" if kind in done else "FAILED", "seconds": seconds.get(kind),
                   "stages": dict((done.get(kind) or {}).get("timings") or {}),
                   "outputs": dict((done.get(kind) or {}).get("outputs") or {})}
            for kind in [*done, *(k for k in seconds if k not in done)]}


@dataclass
class AttemptSummary:
    attempt: int
    jobs: list[JobSummary] = field(default_factory=list)
    notice: dict[str, Any] | None = None  # status, reason_code, created_at, sent_at


@dataclass
class DocumentDetail:
    document_id: str
    status: str
    attempt: int
    reason_code: str | None
    reason_message: str | None
    format: str | None
    pages: int | None
    language: str | None
    size: int | None
    created_at: datetime
    updated_at: datetime
    duration_seconds: float | None
    attempts: list[AttemptSummary]
    # kind -> {"status", "tries", "seconds", "stages": {stage: seconds}} for the current attempt
    timings: dict[str, dict[str, Any]]
    outputs: dict[str, str]  # output name -> object key under results/<id>/ (ids only, no PHI)
    counts: dict[str, int]
    object_key: str | None = None  # only with show_phi
    text_excerpt: str | None = None  # only with show_phi


def row_tries(tries: int, status_reason: str | None, place: RowPlace | None) -> int:
    """Batch's compute attempts of the child when it settled the document: a child settles its
    document while running attempt ``tries + 1`` (the row keeps the tries of its last RUNNING
    change); a row the child's end failed already holds the count."""
    from pipeline.batching import DOCUMENT_DONE

    if place is not None and (status_reason or "").startswith(DOCUMENT_DONE):
        return tries + 1
    return tries


def _job_summary(j: dict[str, Any]) -> JobSummary:
    place = row_place(j["id"], j["kind"], j.get("name"))
    return JobSummary(job_id=j["id"], attempt=j["attempt"], kind=j["kind"], status=j["status"],
                      tries=row_tries(j["tries"], j["status_reason"], place),
                      exit_code=j["exit_code"], status_reason=j["status_reason"], reason_code=j["reason_code"],
                      created_at=aware(j["created_at"]), started_at=aware(j["started_at"]),
                      stopped_at=aware(j["stopped_at"]),
                      duration_seconds=seconds_between(j["started_at"], j["stopped_at"]),
                      batch_job_id=place.batch_job_id if place else None,
                      array_index=place.array_index if place else None,
                      position=place.position if place else None,
                      document_try=place.document_try if place else None)


def show_document(settings: Settings, document_id: str, show_phi: bool = False, store: Any | None = None
                  ) -> DocumentDetail:
    """One document: every attempt's jobs and notice, the current attempt's timings and outputs, counts.

    Raises DocumentNotFound (exit 2) for an unknown id. The store is read only with ``show_phi``
    (for the text excerpt); everything else comes from the database.
    """
    from pipeline import repository
    from pipeline.review.collect import TEXT, get_optional, load_rows

    data = load_rows(settings, document_id)  # DocumentNotFound / ConfigError as `medintake show` has them
    doc = data.document
    with transaction(settings) as s:
        results = dict(s.execute(select(Job.id, Job.result).where(Job.document_id == document_id)).all())
        notices = list(s.scalars(select(Notice).where(Notice.document_id == document_id).order_by(Notice.attempt)))
        notice_rows = {n.attempt: {"status": n.status, "reason_code": n.reason_code,
                                   "created_at": aware(n.created_at), "sent_at": aware(n.sent_at),
                                   "state": n.state, "notice_id": n.id,
                                   "outputs": (n.payload or {}).get("outputs") or {}} for n in notices}
    attempts: dict[int, AttemptSummary] = {}
    for j in data.jobs:
        attempts.setdefault(j["attempt"], AttemptSummary(j["attempt"])).jobs.append(_job_summary(j))
    for n, row in notice_rows.items():
        attempts.setdefault(n, AttemptSummary(n)).notice = {k: v for k, v in row.items() if k != "outputs"}
    current = [j for j in data.jobs if j["attempt"] == doc["attempt"]]
    timings: dict[str, dict[str, Any]] = {}
    outputs: dict[str, str] = {}
    stage_kinds: set[str] = set()
    for j in current:
        r = results.get(j["id"]) or {}
        place = row_place(j["id"], j["kind"], j.get("name"))
        timings[j["kind"]] = {"status": j["status"], "tries": row_tries(j["tries"], j["status_reason"], place),
                              "seconds": seconds_between(j["started_at"], j["stopped_at"]),
                              "stages": dict(r.get("timings") or {})}
        if place is not None:
            # The array shape: one row per try of the document, rows in try order, so the latest
            # try's stages are the ones kept, each with its seconds and sub-stage timings as the
            # per_document shape's three rows have them.
            timings[j["kind"]]["job"] = j["id"]
            timings[j["kind"]]["document_try"] = place.document_try
            for kind in stage_kinds:
                timings.pop(kind, None)  # an earlier try's stages
            stage_kinds = set(stage_rows(r))
            for kind, t in stage_rows(r).items():
                timings[kind] = {"status": t["status"], "tries": place.document_try, "seconds": t["seconds"],
                                 "stages": t["stages"], "job": j["id"]}
                if j["status"] == "SUCCEEDED":
                    outputs.update(t["outputs"])
        if j["status"] == "SUCCEEDED":
            outputs.update(r.get("outputs") or {})
    outputs.update(notice_rows.get(doc["attempt"], {}).get("outputs") or {})  # adds the manifest
    starts = [j["created_at"] for j in current if j["created_at"] is not None]
    final = doc["status"] in FINAL_STATUSES
    detail = DocumentDetail(
        document_id=doc["id"], status=doc["status"], attempt=doc["attempt"], reason_code=doc["reason_code"],
        reason_message=doc["reason_message"], format=doc["file_format"], pages=doc["page_count"],
        language=doc["language"], size=doc["size"], created_at=aware(doc["created_at"]),
        updated_at=aware(doc["updated_at"]),
        duration_seconds=seconds_between(min(starts) if starts else doc["created_at"], doc["updated_at"])
        if final else None,
        attempts=[attempts[n] for n in sorted(attempts)], timings=timings, outputs=dict(sorted(outputs.items())),
        counts=repository.counts_for(settings, document_id),
    )
    if show_phi:
        from pipeline.store import open_store

        detail.object_key = doc["object_key"]
        raw = get_optional(store or open_store(settings), outputs.get("text") or
                           f"{settings.results_prefix}{document_id}/{TEXT}")
        if raw is not None:
            detail.text_excerpt = raw.decode("utf-8", errors="replace")[:TEXT_EXCERPT_CHARS]
    return detail


# ---- jobs show -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class StatusChange:
    """One job state change the tracker recorded (an EventBridge event, or the local one)."""

    time: datetime
    status: str
    tries: int
    exit_code: int | None
    status_reason: str | None


@dataclass(frozen=True)
class TryRecord:
    """One compute attempt of a job (Batch's ``attempts[]``), rebuilt from the state changes.

    Batch appends an attempt when it ends, so the first change carrying ``tries == n`` is where
    attempt n stopped (RUNNABLE again for a retry, else SUCCEEDED/FAILED) and holds its exit code;
    the RUNNING change before it (``tries == n - 1``) is where it started.
    """

    number: int
    started_at: datetime | None
    stopped_at: datetime | None
    duration_seconds: float | None
    exit_code: int | None
    status_reason: str | None
    outcome: str | None  # RUNNABLE (retried), SUCCEEDED, FAILED; None while running


@dataclass
class JobDetail:
    job_id: str
    name: str  # medintake-<kind>-<document id>-a<attempt>[-t<try>], medintake-batch-<id>: ids only
    kind: str
    document_id: str | None  # None for an array job or a child: they run several documents
    attempt: int | None
    status: str
    tries: int
    exit_code: int | None
    status_reason: str | None
    reason_code: str | None
    reason_message: str | None
    created_at: datetime | None
    started_at: datetime | None
    stopped_at: datetime | None
    duration_seconds: float | None
    stages: dict[str, Any]
    changes: list[StatusChange]
    tries_detail: list[TryRecord]
    # What the id names: "job" (a per_document job: extract/entities/convert), "document" (one
    # document's row in the array shape, ``<unit>#<position>``), "child" (``<parent>:<index>``, as
    # Batch names an array child), "array" (the array job: it never runs itself), "plain" (a
    # process job of one slice, not an array). For a document row, ``changes``/``tries_detail``
    # are those of the child (or plain job) that ran it: Batch's compute attempts are the child's.
    unit: str = "job"
    batch_job_id: str | None = None
    array_index: int | None = None
    position: int | None = None
    document_try: int | None = None
    unit_job_id: str | None = None  # whose log and state changes these are
    documents: list[dict[str, Any]] = field(default_factory=list)  # a child's / plain job's rows
    children: list[dict[str, Any]] = field(default_factory=list)  # an array job's children


def rebuild_tries(changes: list[StatusChange]) -> list[TryRecord]:
    """Per compute attempt: start, stop, exit code, from the state changes in the order received."""
    def first(pred) -> StatusChange | None:
        return next((c for c in changes if pred(c)), None)

    most = max([c.tries for c in changes] + [0])
    out: list[TryRecord] = []
    for n in range(1, most + 1):
        start = first(lambda c: c.tries == n - 1 and c.status == "RUNNING")
        end = first(lambda c: c.tries == n)
        out.append(TryRecord(number=n, started_at=start.time if start else None, stopped_at=end.time,
                             duration_seconds=seconds_between(start.time if start else None, end.time),
                             exit_code=end.exit_code, status_reason=end.status_reason, outcome=end.status))
    running = first(lambda c: c.tries == most and c.status == "RUNNING")
    if running is not None:
        # Attempt most+1 started and no change carries it yet: still running, or stopped without
        # an attempt being recorded (the local backend's TerminateJob ends a job that way).
        after = changes[changes.index(running):]
        end = next((c for c in after if c.status in ("SUCCEEDED", "FAILED")), None)
        out.append(TryRecord(number=most + 1, started_at=running.time, stopped_at=end.time if end else None,
                             duration_seconds=seconds_between(running.time, end.time if end else None),
                             exit_code=end.exit_code if end else None,
                             status_reason=end.status_reason if end else None, outcome=end.status if end else None))
    return out


def _changes(s: Any, job_id: str) -> list[StatusChange]:
    events = s.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.received_at, JobEvent.id))
    return [StatusChange(time=aware(e.received_at), status=e.status, tries=e.tries, exit_code=e.exit_code,
                         status_reason=e.status_reason) for e in events]


def _row_entry(j: Job) -> dict[str, Any]:
    place = row_place(j.id, j.kind, j.name)
    return {"job_id": j.id, "position": place.position if place else None, "document_id": j.document_id,
            "attempt": j.attempt, "document_try": place.document_try if place else None, "status": j.status,
            "exit_code": j.exit_code, "reason_code": j.reason_code,
            "seconds": seconds_between(j.started_at, j.stopped_at),
            "stages": {k: t["seconds"] for k, t in stage_rows(j.result).items()}}


def _flat_stages(result: dict[str, Any] | None) -> dict[str, Any]:
    """An array-shape row's stage timings flattened for one table: stage, then stage.sub-stage."""
    out: dict[str, Any] = {}
    for kind, t in stage_rows(result).items():
        out[kind] = t["seconds"]
        out.update({f"{kind}.{k}": v for k, v in t["stages"].items()})
    return out


def show_job(settings: Settings, job_id: str) -> JobDetail:
    """A job (by id, or by its name) and every state change recorded for it.

    In the array shape the id may also be what Batch shows: an array job's id (its children and
    their documents), a child's ``<parent>:<index>`` or a plain process job's id (its documents,
    its compute attempts). Raises JobNotFound (exit 2) for an unknown id.
    """
    from pipeline.review.collect import _no_database

    if _no_database(settings):
        raise JobNotFound("no job with that id (this data folder has no database)",
                          fix="Check the id and --data-dir / MEDINTAKE_DATABASE_URL.")
    with transaction(settings) as s:
        job = s.get(Job, job_id)
        if job is None and job_id.startswith("medintake-"):
            # The name Batch's console and `queue status` show (medintake-<kind>-<document>-a<n>):
            # the newest job of that name (a retired half-submitted one may share it).
            job = s.scalars(select(Job).where(Job.name == job_id)
                            .order_by(Job.attempt.desc(), Job.created_at.desc()).limit(1)).first()
            if job is not None and row_place(job.id, job.kind, job.name) is not None \
                    and row_place(job.id, job.kind, job.name).array_index is None:
                job_id = row_place(job.id, job.kind, job.name).unit_job_id  # a plain job's name: the job
                job = None
        if job is None:
            return _show_unit(s, job_id)
        place = row_place(job.id, job.kind, job.name)
        changes = _changes(s, place.unit_job_id if place else job.id)
        result = job.result or {}
        detail = JobDetail(
            job_id=job.id, name=job.name, kind=job.kind, document_id=job.document_id, attempt=job.attempt,
            status=job.status, tries=row_tries(job.tries, job.status_reason, place), exit_code=job.exit_code,
            status_reason=job.status_reason,
            reason_code=job.reason_code, reason_message=job.reason_message, created_at=aware(job.created_at),
            started_at=aware(job.started_at), stopped_at=aware(job.stopped_at),
            duration_seconds=seconds_between(job.started_at, job.stopped_at),
            stages=_flat_stages(result) if place else dict(result.get("timings") or {}),
            changes=changes, tries_detail=rebuild_tries(changes),
        )
        if place is not None:
            detail.unit = "document"
            detail.batch_job_id, detail.array_index = place.batch_job_id, place.array_index
            detail.position, detail.document_try, detail.unit_job_id = place.position, place.document_try, place.unit_job_id
        return detail


def _show_unit(s: Any, job_id: str) -> JobDetail:
    """An array job, a child or a plain process job: no row of its own, its events and its rows."""
    from pipeline.batching import PROCESS_KIND

    like = job_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    changes = _changes(s, job_id)
    rows = list(s.scalars(select(Job).where(Job.id.like(f"{like}#%", escape="\\"), Job.kind == PROCESS_KIND)))
    children: dict[str, list[Job]] = {}
    if not rows:
        for j in s.scalars(select(Job).where(Job.id.like(f"{like}:%#%", escape="\\"), Job.kind == PROCESS_KIND)):
            place = row_place(j.id, j.kind, j.name)
            if place is not None and place.batch_job_id == job_id:
                children.setdefault(place.unit_job_id, []).append(j)
    if not rows and not children and not changes:
        raise JobNotFound("no job with that id")
    last = changes[-1] if changes else None
    parent, colon, index = job_id.rpartition(":")
    is_child = bool(colon) and index.isdigit()
    unit = "array" if children or (changes and not rows and not is_child) else ("child" if is_child else "plain")
    every = rows or [j for js in children.values() for j in js]
    name = every[0].name if unit == "plain" and len(every) == 1 else None
    detail = JobDetail(
        job_id=job_id, name=name or "-", kind=PROCESS_KIND,  # an array job's name is not recorded
        document_id=every[0].document_id if unit == "plain" and len(every) == 1 else None,
        attempt=every[0].attempt if unit == "plain" and len(every) == 1 else None,
        status=last.status if last else _summed_status([j.status for j in every]),
        tries=max([c.tries for c in changes] + [0]), exit_code=last.exit_code if last else None,
        status_reason=last.status_reason if last else None, reason_code=None, reason_message=None,
        created_at=changes[0].time if changes else None,
        started_at=next((c.time for c in changes if c.status == "RUNNING"), None),
        stopped_at=last.time if last and last.status in ("SUCCEEDED", "FAILED") else None,
        duration_seconds=None, stages={}, changes=changes,
        tries_detail=[] if unit == "array" else rebuild_tries(changes), unit=unit,
        batch_job_id=parent if is_child else job_id, array_index=int(index) if is_child else None,
        unit_job_id=None if unit == "array" else job_id,
    )
    detail.duration_seconds = seconds_between(detail.started_at, detail.stopped_at)
    key = lambda j: (row_place(j.id, j.kind, j.name).position, j.id)  # noqa: E731
    detail.documents = [_row_entry(j) for j in sorted(rows, key=key)]
    for child_id in sorted(children, key=lambda c: int(c.rpartition(":")[2])):
        js = sorted(children[child_id], key=key)
        child_changes = _changes(s, child_id)
        detail.children.append({
            "job_id": child_id, "index": int(child_id.rpartition(":")[2]),
            "status": child_changes[-1].status if child_changes else _summed_status([j.status for j in js]),
            "tries": max([c.tries for c in child_changes] + [0]),
            "exit_code": child_changes[-1].exit_code if child_changes else None,
            "documents": len(js), "failed": sum(j.status == "FAILED" for j in js),
            "document_ids": [j.document_id for j in js]})
    return detail


def _summed_status(statuses: list[str]) -> str:
    """A unit's state from its rows when no state change of its own was recorded."""
    if statuses and all(x == "SUCCEEDED" for x in statuses):
        return "SUCCEEDED"
    if statuses and all(x in ("SUCCEEDED", "FAILED") for x in statuses):
        return "FAILED"
    return statuses[0] if len(set(statuses)) == 1 else "RUNNING"
