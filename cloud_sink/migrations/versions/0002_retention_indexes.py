"""retention indexes: stored_at on events, telemetry and status_log

Store.prune deletes rows by the time the sink stored them; without an index each prune batch
would scan the whole table (dead_letters.last_seen has had its index since 0001).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 10:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_stored_at", ["stored_at"], unique=False)
    with op.batch_alter_table("telemetry", schema=None) as batch_op:
        batch_op.create_index("ix_telemetry_stored_at", ["stored_at"], unique=False)
    with op.batch_alter_table("status_log", schema=None) as batch_op:
        batch_op.create_index("ix_status_log_stored_at", ["stored_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("status_log", schema=None) as batch_op:
        batch_op.drop_index("ix_status_log_stored_at")
    with op.batch_alter_table("telemetry", schema=None) as batch_op:
        batch_op.drop_index("ix_telemetry_stored_at")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_stored_at")
