"""fires and runs

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from scheduler.store import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fires",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job", sa.String(100), nullable=False),
        sa.Column("slot", UTCDateTime(), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("fired_at", UTCDateTime(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("submission_name", sa.String(160), nullable=False),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("runs_requested", sa.Integer(), nullable=False),
        sa.Column("submitted_at", UTCDateTime(), nullable=True),
        sa.Column("poll_deadline", UTCDateTime(), nullable=True),
        sa.Column("result_id", sa.BigInteger(), nullable=True),
        sa.Column("result_status", sa.String(32), nullable=True),
        sa.Column("success_rate", sa.Float(), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("skip_reason", sa.String(64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("error_status_code", sa.Integer(), nullable=True),
        sa.Column("failed_reasons", sa.Text(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.UniqueConstraint("job", "slot", name="uq_fires_job_slot"),
    )
    op.create_index("ix_fires_state", "fires", ["state"])
    op.create_index("ix_fires_job_id", "fires", ["job", "id"])
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("fire_id", sa.Integer(), sa.ForeignKey("fires.id", ondelete="CASCADE"), nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("scenario", sa.BigInteger(), nullable=True),
        sa.Column("scenario_name", sa.String(300), nullable=True),
        sa.Column("status", sa.String(32), nullable=True),
        sa.Column("success", sa.Boolean(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("duration", sa.String(16), nullable=True),
        sa.Column("failed_metrics", sa.Text(), nullable=True),
        sa.UniqueConstraint("fire_id", "run_id", name="uq_runs_fire_run"),
    )
    op.create_index("ix_runs_fire_id", "runs", ["fire_id"])


def downgrade() -> None:
    op.drop_table("runs")
    op.drop_table("fires")
