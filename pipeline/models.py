"""The relational schema (SPEC 4): documents, jobs, events, pages, entities, renditions, notices.

One schema for SQLite, MariaDB/MySQL (RDS) and PostgreSQL: portable types only (String with
lengths, Text, JSON, timezone-aware DateTime), no index on long text columns (MySQL's 3072-byte
limit), and every uniqueness rule that makes an operation idempotent is a real constraint, so that
concurrent dispatchers or trackers are serialised by the database rather than by luck.
Migrations (pipeline/migrations) create exactly these tables.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

FINAL_STATUSES = ("COMPLETED", "FAILED", "REJECTED")
DOCUMENT_STATUSES = ("RECEIVED", "QUEUED", "PROCESSING", *FINAL_STATUSES)
JOB_STATUSES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def folder_digest(object_key: str) -> str:
    """SHA-256 of the key's folder (everything before its last "/"): what an upload's status is
    looked up by, indexed. A digest and not the folder itself: fixed length under MySQL's index
    limit, and no second copy of a path that may name a patient."""
    import hashlib

    return hashlib.sha256(object_key.rpartition("/")[0].encode("utf-8")).hexdigest()


def _folder_digest_default(context) -> str | None:  # noqa: ANN001
    key = context.get_current_parameters().get("object_key")
    return folder_digest(key) if isinstance(key, str) else None


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Document(Base):
    __tablename__ = "documents"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    bucket: Mapped[str] = mapped_column(String(255))
    object_key: Mapped[str] = mapped_column(Text)  # may hold a patient's name: PHI
    key_folder_sha256: Mapped[str | None] = mapped_column(String(64), default=_folder_digest_default)
    version_id: Mapped[str | None] = mapped_column(String(1024))
    etag: Mapped[str | None] = mapped_column(String(128))
    size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    file_format: Mapped[str | None] = mapped_column(String(16))
    page_count: Mapped[int | None] = mapped_column(Integer)
    language: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="RECEIVED")
    reason_code: Mapped[str | None] = mapped_column(String(64))
    reason_message: Mapped[str | None] = mapped_column(String(512))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    __table_args__ = (Index("ix_documents_status", "status"),
                      Index("ix_documents_bucket_folder", "bucket", "key_folder_sha256"))


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the compute backend's job id
    document_id: Mapped[str] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)  # the document attempt this job belongs to
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="SUBMITTED")
    tries: Mapped[int] = mapped_column(Integer, default=0)  # compute attempts seen so far
    exit_code: Mapped[int | None] = mapped_column(Integer)
    status_reason: Mapped[str | None] = mapped_column(String(512))
    depends_on: Mapped[list[Any]] = mapped_column(JSON, default=list)
    reason_code: Mapped[str | None] = mapped_column(String(64))  # set by the worker on rejection
    reason_message: Mapped[str | None] = mapped_column(String(512))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # outputs, counts, timings, versions
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    __table_args__ = (
        Index("ix_jobs_document_attempt", "document_id", "attempt"),
        Index("ix_jobs_status", "status"),
    )


class JobEvent(Base):
    """Every job state change received, once (deduplicated on the event id)."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(String(64))
    document_id: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    tries: Mapped[int] = mapped_column(Integer, default=0)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    status_reason: Mapped[str | None] = mapped_column(String(512))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (Index("ix_events_job", "job_id"),)


class Page(Base):
    __tablename__ = "pages"

    document_id: Mapped[str] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True
    )
    page_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(16))
    width: Mapped[float] = mapped_column(Float)
    height: Mapped[float] = mapped_column(Float)
    rotation: Mapped[int] = mapped_column(Integer, default=0)
    dpi: Mapped[int | None] = mapped_column(Integer)
    chars: Mapped[int] = mapped_column(Integer, default=0)
    words: Mapped[int] = mapped_column(Integer, default=0)
    mean_confidence: Mapped[float | None] = mapped_column(Float)


class Entity(Base):
    __tablename__ = "entities"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    document_id: Mapped[str] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    entity_no: Mapped[int] = mapped_column(Integer)
    category: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)  # PHI
    begin_offset: Mapped[int] = mapped_column(Integer)
    end_offset: Mapped[int] = mapped_column(Integer)
    score: Mapped[float] = mapped_column(Float)
    traits: Mapped[list[Any]] = mapped_column(JSON, default=list)
    attributes: Mapped[list[Any]] = mapped_column(JSON, default=list)

    __table_args__ = (Index("ix_entities_document", "document_id"),)


class Rendition(Base):
    __tablename__ = "renditions"

    document_id: Mapped[str] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    object_key: Mapped[str] = mapped_column(String(512))
    format: Mapped[str] = mapped_column(String(8))
    mime: Mapped[str] = mapped_column(String(32))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(BigInteger)


NOTICE_STATES = ("pending", "publishing", "sent", "unconfirmed")


class Notice(Base):
    """The outbox: one row per document attempt (unique), sent_at set once published.

    ``state`` is recorded and committed before the publish call (pending -> publishing, with who
    and when), so a publish whose outcome is unknown (the process died inside the call, a read
    timeout after the request went out) is visible as such and never re-sent blindly: it becomes
    ``unconfirmed`` for an operator (standard SNS topic) or is re-sent only while the topic's
    deduplication window still covers the first try (FIFO). ``unknown_since`` anchors that window.
    """

    __tablename__ = "notices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    document_id: Mapped[str] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    reason_code: Mapped[str | None] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # publish lease
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The server defaults are migration 0002's (rows that existed before the column).
    state: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending")  # NOTICE_STATES
    publisher: Mapped[str | None] = mapped_column(String(96))  # host:pid:token of the publishing process
    publish_tries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    unknown_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # first unknown outcome
    last_error: Mapped[str | None] = mapped_column(String(96))  # an error class or code, never PHI

    __table_args__ = (
        UniqueConstraint("document_id", "attempt", name="uq_notices_document_attempt"),
        Index("ix_notices_state", "state"),
    )
