"""protocol v2: the schema version of each row, blinks summarised in telemetry

Vehicles on protocol v2 send the feature window as columns (stored in ``events.features`` in
that shape for v1 rows too) and the blinks since the last summary inside telemetry.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 23:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("protocol", sa.Integer(), nullable=True))
    with op.batch_alter_table("telemetry", schema=None) as batch_op:
        batch_op.add_column(sa.Column("blink_durations_ms", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("long_blinks", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("protocol", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("telemetry", schema=None) as batch_op:
        batch_op.drop_column("protocol")
        batch_op.drop_column("long_blinks")
        batch_op.drop_column("blink_durations_ms")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("protocol")
