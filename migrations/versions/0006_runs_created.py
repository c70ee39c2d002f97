"""fires.runs_created: how many runs Cekura's answer listed (tag, folder and spec jobs are counted only then);
an index on fires.result_id, by which a webhook finds its fire

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("fires") as batch:
        batch.add_column(sa.Column("runs_created", sa.Integer(), nullable=True))
    op.create_index("ix_fires_result_id", "fires", ["result_id"])


def downgrade() -> None:
    op.drop_index("ix_fires_result_id", table_name="fires")
    with op.batch_alter_table("fires") as batch:
        batch.drop_column("runs_created")
