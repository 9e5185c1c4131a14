"""Documents by their key's folder: an indexed digest for the upload API's status lookup.

Revision ID: 0003_document_folder
Revises: 0002_notice_states

``GET /uploads/{upload_id}`` looked documents up by a prefix match on ``object_key`` (TEXT, which
MySQL cannot index whole): a scan of every document per poll. Now it matches the digest of the
key's folder (pipeline.models.folder_digest) on an index with the bucket. Existing rows are filled
in here, a batch at a time.
"""
from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0003_document_folder"
down_revision = "0002_notice_states"
branch_labels = None
depends_on = None

_BATCH = 1000


def _folder_digest(object_key: str) -> str:
    """pipeline.models.folder_digest as of this revision (a migration never follows later code)."""
    return hashlib.sha256(object_key.rpartition("/")[0].encode("utf-8")).hexdigest()


def upgrade() -> None:
    with op.batch_alter_table("documents") as batch:
        batch.add_column(sa.Column("key_folder_sha256", sa.String(64)))
    conn = op.get_bind()
    documents = sa.table("documents", sa.column("id", sa.String), sa.column("object_key", sa.Text),
                         sa.column("key_folder_sha256", sa.String))
    last = ""
    while True:
        rows = conn.execute(sa.select(documents.c.id, documents.c.object_key).where(documents.c.id > last)
                            .order_by(documents.c.id).limit(_BATCH)).fetchall()
        if not rows:
            break
        for doc_id, key in rows:
            conn.execute(documents.update().where(documents.c.id == doc_id)
                         .values(key_folder_sha256=_folder_digest(key)))
        last = rows[-1][0]
    op.create_index("ix_documents_bucket_folder", "documents", ["bucket", "key_folder_sha256"])


def downgrade() -> None:
    op.drop_index("ix_documents_bucket_folder", table_name="documents")
    with op.batch_alter_table("documents") as batch:
        batch.drop_column("key_folder_sha256")
