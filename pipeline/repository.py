"""Database operations with the idempotency rules of SPEC 4.

Every state change that must happen once is a conditional UPDATE or an INSERT guarded by a unique
constraint, so duplicate events, concurrent dispatchers and retried trackers cannot double it.
"""
from __future__ import annotations

from typing import Any, Iterable

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from pipeline.database import transaction
from pipeline.errors import DocumentNotFound
from pipeline.events import UploadRef
from pipeline.models import FINAL_STATUSES, Document, Entity, Job, JobEvent, Notice, Page, Rendition, utcnow
from pipeline.settings import Settings


def register_document(settings: Settings, ref: UploadRef) -> tuple[Document, bool]:
    """Insert the document for ``ref`` unless it exists; return it and whether it is new."""
    doc_id = ref.document_id
    try:
        with transaction(settings) as s:
            doc = Document(
                id=doc_id,
                bucket=ref.bucket,
                object_key=ref.key,
                version_id=ref.version_id,
                etag=(ref.etag or "").strip('"') or None,
                size=ref.size,
                status="RECEIVED",
                attempt=1,
            )
            s.add(doc)
        return doc, True
    except IntegrityError:
        return get_document(settings, doc_id), False


def get_document(settings: Settings, doc_id: str) -> Document:
    with transaction(settings) as s:
        doc = s.get(Document, doc_id)
        if doc is None:
            raise DocumentNotFound("no document with that id")
        return doc


def find_documents(settings: Settings, ids: Iterable[str]) -> dict[str, Document]:
    ids = list(ids)
    with transaction(settings) as s:
        return {d.id: d for d in s.scalars(select(Document).where(Document.id.in_(ids)))}


def claim(settings: Settings, doc_id: str, attempt: int, from_status: str, to_status: str) -> bool:
    """Move a document attempt between statuses only if it is still in ``from_status``."""
    with transaction(settings) as s:
        result = s.execute(
            update(Document)
            .where(Document.id == doc_id, Document.attempt == attempt, Document.status == from_status)
            .values(status=to_status, updated_at=utcnow())
        )
        return result.rowcount == 1


def start_new_attempt(settings: Settings, doc_id: str, force: bool = False) -> int:
    """Reprocessing: a final document gets attempt+1 in RECEIVED; returns the new attempt (0: not final).

    ``force`` also restarts a document stuck mid-flight, for the local backend after a crash:
    its jobs died with the process that ran them, so no event will ever finish that attempt.
    """
    with transaction(settings) as s:
        doc = s.get(Document, doc_id, with_for_update=True)
        if doc is None:
            raise DocumentNotFound("no document with that id")
        if doc.status not in FINAL_STATUSES and not force:
            return 0
        doc.attempt += 1
        doc.status = "RECEIVED"
        doc.reason_code = doc.reason_message = None
        return doc.attempt


def jobs_for(settings: Settings, doc_id: str, attempt: int) -> list[Job]:
    with transaction(settings) as s:
        return list(
            s.scalars(select(Job).where(Job.document_id == doc_id, Job.attempt == attempt).order_by(Job.created_at))
        )


def get_job(settings: Settings, job_id: str) -> Job | None:
    with transaction(settings) as s:
        return s.get(Job, job_id)


def record_job_event(settings: Settings, change: Any) -> Job | None:
    """Record one job state change once; update the job if the change is newer. Returns the job.

    Events can arrive twice and out of order (EventBridge is at-least-once, unordered), so an
    event is applied only when (tries, status rank) is not older than what the job row holds.
    Returns None for a duplicate event or a job that is not ours.
    """
    from pipeline.batch_events import status_rank

    try:
        with transaction(settings) as s:
            job = s.get(Job, change.job_id, with_for_update=True)
            if job is None:
                job = _job_from_event(s, change)
                if job is None:
                    return None
            s.add(
                JobEvent(
                    event_id=change.event_id,
                    job_id=change.job_id,
                    document_id=job.document_id,
                    status=change.status,
                    tries=change.tries,
                    exit_code=change.exit_code,
                    status_reason=(change.status_reason or "")[:512] or None,
                )
            )
            s.flush()
            if (change.tries, status_rank(change.status)) >= (job.tries, status_rank(job.status)):
                job.status = change.status
                job.tries = change.tries
                if change.exit_code is not None or change.status in ("SUCCEEDED", "FAILED"):
                    job.exit_code = change.exit_code
                job.status_reason = (change.status_reason or "")[:512] or None
                job.started_at = change.started_at or job.started_at
                job.stopped_at = change.stopped_at or job.stopped_at
            return job
    except IntegrityError:
        return None


def _job_from_event(s: Any, change: Any) -> Job | None:
    """A job we submitted whose event overtook the dispatcher's insert (EventBridge is fast)."""
    from pipeline.jobdefs import GRAPH

    params = change.parameters or {}
    kind = next((k for k in GRAPH if change.job_name.startswith(f"medintake-{k}-")), None)
    doc_id = params.get("document_id")
    if kind is None or not doc_id or s.get(Document, doc_id) is None:
        return None
    job = Job(
        id=change.job_id, document_id=doc_id, attempt=int(params.get("attempt", 1)), kind=kind,
        name=change.job_name, status="SUBMITTED", tries=0, depends_on=[],
    )
    s.add(job)
    s.flush()
    return job


def add_job(settings: Settings, job: Job) -> None:
    """Insert a submitted job unless the tracker already created it from an event."""
    try:
        with transaction(settings) as s:
            s.add(job)
    except IntegrityError:
        with transaction(settings) as s:
            s.execute(update(Job).where(Job.id == job.id).values(depends_on=job.depends_on))


def retire_jobs(settings: Settings, doc_id: str, job_ids: list[str]) -> None:
    """Move terminated jobs of a half-submitted graph to attempt 0, which no document has.

    Their rows stay (history, and so that their late FAILED events are recognised as ours and not
    re-created as jobs of the live attempt); jobs_for() and the tracker no longer see them.
    """
    if not job_ids:
        return
    with transaction(settings) as s:
        known = set(s.scalars(select(Job.id).where(Job.id.in_(job_ids))))
        s.execute(update(Job).where(Job.id.in_(job_ids)).values(attempt=0))
        for job_id in set(job_ids) - known:  # submitted, but its row was never written
            s.add(Job(id=job_id, document_id=doc_id, attempt=0, kind="retired", name="retired",
                      status="SUBMITTED", tries=0, depends_on=[]))


def save_job_result(
    settings: Settings,
    job_id: str,
    result: dict[str, Any] | None = None,
    reason: tuple[str, str] | None = None,
) -> None:
    with transaction(settings) as s:
        values: dict[str, Any] = {"updated_at": utcnow()}
        if result is not None:
            values["result"] = result
        if reason is not None:
            values["reason_code"], values["reason_message"] = reason[0], reason[1][:512]
        s.execute(update(Job).where(Job.id == job_id).values(**values))


def update_document(settings: Settings, doc_id: str, **values: Any) -> None:
    with transaction(settings) as s:
        s.execute(update(Document).where(Document.id == doc_id).values(updated_at=utcnow(), **values))


def replace_pages(settings: Settings, doc_id: str, pages: Iterable[Page]) -> None:
    with transaction(settings) as s:
        s.execute(delete(Page).where(Page.document_id == doc_id))
        s.add_all(list(pages))


def replace_entities(settings: Settings, doc_id: str, entities: Iterable[Entity]) -> None:
    with transaction(settings) as s:
        s.execute(delete(Entity).where(Entity.document_id == doc_id))
        s.add_all(list(entities))


def replace_renditions(settings: Settings, doc_id: str, renditions: Iterable[Rendition]) -> None:
    with transaction(settings) as s:
        s.execute(delete(Rendition).where(Rendition.document_id == doc_id))
        s.add_all(list(renditions))


def finalize(
    settings: Settings, doc_id: str, attempt: int, status: str, reason: tuple[str, str] | None, payload: dict
) -> Notice | None:
    """Set the final status and write the notice row, atomically and once per document attempt.

    Returns the notice to publish, or None when another tracker already finalised this attempt.
    """
    try:
        with transaction(settings) as s:
            result = s.execute(
                update(Document)
                .where(
                    Document.id == doc_id,
                    Document.attempt == attempt,
                    Document.status.not_in(FINAL_STATUSES),
                )
                .values(
                    status=status,
                    reason_code=reason[0] if reason else None,
                    reason_message=reason[1][:512] if reason else None,
                    updated_at=utcnow(),
                )
            )
            if result.rowcount != 1:
                return None
            notice = Notice(
                document_id=doc_id,
                attempt=attempt,
                status=status,
                reason_code=reason[0] if reason else None,
                payload=payload,
            )
            s.add(notice)
            return notice
    except IntegrityError:
        return None


def unsent_notices(settings: Settings) -> list[Notice]:
    with transaction(settings) as s:
        return list(s.scalars(select(Notice).where(Notice.sent_at.is_(None)).order_by(Notice.id)))


def claim_notice(settings: Settings, notice_id: int, lease_seconds: float = 120.0) -> bool:
    """Take the publish lease on an unsent notice, so two trackers never both publish it.

    A lease, not a flag: a tracker that dies after claiming lets the notice go out again once the
    lease has expired, so nothing is lost.
    """
    from datetime import timedelta

    from sqlalchemy import or_

    now = utcnow()
    with transaction(settings) as s:
        result = s.execute(
            update(Notice)
            .where(
                Notice.id == notice_id,
                Notice.sent_at.is_(None),
                or_(Notice.claimed_at.is_(None), Notice.claimed_at < now - timedelta(seconds=lease_seconds)),
            )
            .values(claimed_at=now)
        )
        return result.rowcount == 1


def release_notice(settings: Settings, notice_id: int) -> None:
    with transaction(settings) as s:
        s.execute(update(Notice).where(Notice.id == notice_id).values(claimed_at=None))


def mark_sent(settings: Settings, notice_id: int) -> None:
    with transaction(settings) as s:
        s.execute(update(Notice).where(Notice.id == notice_id).values(sent_at=utcnow()))


def counts_for(settings: Settings, doc_id: str) -> dict[str, int]:
    from sqlalchemy import func

    with transaction(settings) as s:
        return {
            "pages": s.scalar(select(func.count()).select_from(Page).where(Page.document_id == doc_id)) or 0,
            "entities": s.scalar(select(func.count()).select_from(Entity).where(Entity.document_id == doc_id)) or 0,
            "renditions": s.scalar(select(func.count()).select_from(Rendition).where(Rendition.document_id == doc_id))
            or 0,
        }


def start_attempt_if_unchanged(settings: Settings, doc_id: str, attempt: int, final_only: bool) -> int:
    """Reprocessing a selection: attempt+1 in RECEIVED only if the document is still at ``attempt``.

    An operator's selection is read before it is acted on; in between a dispatcher, the tracker or
    another operator may have moved the document on. Guarding on the attempt (and, for documents
    selected as final, on still being final) makes a stale selection skip instead of restarting
    work that is already running. Returns the new attempt, or 0 when the document moved on.
    """
    conditions = [Document.id == doc_id, Document.attempt == attempt]
    if final_only:
        conditions.append(Document.status.in_(FINAL_STATUSES))
    with transaction(settings) as s:
        result = s.execute(
            update(Document).where(*conditions)
            .values(attempt=attempt + 1, status="RECEIVED", reason_code=None, reason_message=None,
                    updated_at=utcnow())
        )
        return attempt + 1 if result.rowcount == 1 else 0


def restore_attempt(settings: Settings, doc_id: str, new_attempt: int, previous: Document) -> bool:
    """Undo ``start_attempt_if_unchanged`` after the new attempt's graph could not be submitted.

    No event will ever redeliver an operator's reprocess, so a document left RECEIVED without jobs
    would be invisible to the filters that selected it; putting the previous attempt back (status,
    reason, and the old ``updated_at`` so a stuck document still looks stuck) lets the same command
    be run again. Only while the new attempt is still unclaimed (RECEIVED).
    """
    with transaction(settings) as s:
        result = s.execute(
            update(Document)
            .where(Document.id == doc_id, Document.attempt == new_attempt, Document.status == "RECEIVED")
            .values(attempt=previous.attempt, status=previous.status, reason_code=previous.reason_code,
                    reason_message=previous.reason_message, updated_at=previous.updated_at)
        )
        return result.rowcount == 1
