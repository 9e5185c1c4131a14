"""Initial schema: documents, jobs, events, pages, entities, renditions, notices.

Revision ID: 0001
Revises:
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "documents",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("bucket", sa.String(255), nullable=False),
        sa.Column("object_key", sa.Text(), nullable=False),
        sa.Column("version_id", sa.String(1024)),
        sa.Column("etag", sa.String(128)),
        sa.Column("size", sa.BigInteger()),
        sa.Column("sha256", sa.String(64)),
        sa.Column("file_format", sa.String(16)),
        sa.Column("page_count", sa.Integer()),
        sa.Column("language", sa.String(64)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason_code", sa.String(64)),
        sa.Column("reason_message", sa.String(512)),
        sa.Column("attempt", sa.Integer(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
    )
    op.create_index("ix_documents_status", "documents", ["status"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("document_id", sa.String(32), sa.ForeignKey("documents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("tries", sa.Integer(), nullable=False),
        sa.Column("exit_code", sa.Integer()),
        sa.Column("status_reason", sa.String(512)),
        sa.Column("depends_on", sa.JSON(), nullable=False),
        sa.Column("reason_code", sa.String(64)),
        sa.Column("reason_message", sa.String(512)),
        sa.Column("result", sa.JSON()),
        _ts("created_at"),
        _ts("started_at", True),
        _ts("stopped_at", True),
        _ts("updated_at"),
    )
    op.create_index("ix_jobs_document_attempt", "jobs", ["document_id", "attempt"])
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(64), nullable=False, unique=True),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("document_id", sa.String(32)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("tries", sa.Integer(), nullable=False),
        sa.Column("exit_code", sa.Integer()),
        sa.Column("status_reason", sa.String(512)),
        _ts("received_at"),
    )
    op.create_index("ix_events_job", "events", ["job_id"])
    op.create_table(
        "pages",
        sa.Column("document_id", sa.String(32), sa.ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("page_no", sa.Integer(), primary_key=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("width", sa.Float(), nullable=False),
        sa.Column("height", sa.Float(), nullable=False),
        sa.Column("rotation", sa.Integer(), nullable=False),
        sa.Column("dpi", sa.Integer()),
        sa.Column("chars", sa.Integer(), nullable=False),
        sa.Column("words", sa.Integer(), nullable=False),
        sa.Column("mean_confidence", sa.Float()),
    )
    op.create_table(
        "entities",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("document_id", sa.String(32), sa.ForeignKey("documents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("entity_no", sa.Integer(), nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("begin_offset", sa.Integer(), nullable=False),
        sa.Column("end_offset", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("traits", sa.JSON(), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
    )
    op.create_index("ix_entities_document", "entities", ["document_id"])
    op.create_table(
        "renditions",
        sa.Column("document_id", sa.String(32), sa.ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("object_key", sa.String(512), nullable=False),
        sa.Column("format", sa.String(8), nullable=False),
        sa.Column("mime", sa.String(32), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "notices",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("document_id", sa.String(32), sa.ForeignKey("documents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason_code", sa.String(64)),
        sa.Column("payload", sa.JSON(), nullable=False),
        _ts("created_at"),
        _ts("claimed_at", True),
        _ts("sent_at", True),
        sa.UniqueConstraint("document_id", "attempt", name="uq_notices_document_attempt"),
    )


def downgrade() -> None:
    for table in ("notices", "renditions", "entities", "pages", "events", "jobs", "documents"):
        op.drop_table(table)
