"""driver acknowledgements: when and how the driver acknowledged an alert (a weak label)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 05:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("acknowledged_ms", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("acknowledged_via", sa.String(length=8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("acknowledged_via")
        batch_op.drop_column("acknowledged_ms")
