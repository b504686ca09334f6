"""label audit: which API token gave each label (beside the name the labeller typed)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 06:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("event_labels", schema=None) as batch_op:
        batch_op.add_column(sa.Column("token", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("event_labels", schema=None) as batch_op:
        batch_op.drop_column("token")
