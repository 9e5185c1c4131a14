"""Notice publish states: pending -> publishing -> sent, or unconfirmed when the outcome is unknown.

Revision ID: 0002_notice_states
Revises: 0001

Existing rows keep their meaning: a row with ``sent_at`` is sent; a row held by a publish lease
(``claimed_at`` without ``sent_at``) is publishing, so the next tracker treats it as a publish of
unknown outcome rather than sending it again blindly.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_notice_states"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("notices") as batch:
        batch.add_column(sa.Column("state", sa.String(16), nullable=False, server_default="pending"))
        batch.add_column(sa.Column("publisher", sa.String(96)))
        batch.add_column(sa.Column("publish_tries", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("unknown_since", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("last_error", sa.String(96)))
    op.execute("UPDATE notices SET state = 'sent' WHERE sent_at IS NOT NULL")
    op.execute("UPDATE notices SET state = 'publishing' WHERE sent_at IS NULL AND claimed_at IS NOT NULL")
    op.create_index("ix_notices_state", "notices", ["state"])


def downgrade() -> None:
    op.drop_index("ix_notices_state", table_name="notices")
    with op.batch_alter_table("notices") as batch:
        for name in ("last_error", "unknown_since", "publish_tries", "publisher", "state"):
            batch.drop_column(name)
