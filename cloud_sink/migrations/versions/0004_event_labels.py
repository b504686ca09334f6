"""event labels: what people say of an alert, append-only (the audit trail)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 05:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_labels",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("label", sa.String(length=16), nullable=False),
        sa.Column("previous", sa.String(length=16), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("labeller", sa.String(length=64), nullable=False),
        sa.Column("time", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_labels")),
    )
    with op.batch_alter_table("event_labels", schema=None) as batch_op:
        batch_op.create_index("ix_event_labels_event_id", ["event_id", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("event_labels", schema=None) as batch_op:
        batch_op.drop_index("ix_event_labels_event_id")
    op.drop_table("event_labels")
