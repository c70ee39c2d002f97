"""Indexes for a long history: the day's runs per job and in all (max_runs_per_day), a job's open incidents
(read with every verdict), and pruning by age; ix_fires_state dropped (ix_fires_state_lease starts with state)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

INDEXES = [
    ("ix_fires_job_fired_at", "fires", ["job", "fired_at"]),
    ("ix_fires_fired_at", "fires", ["fired_at"]),
    ("ix_outbox_created_at", "outbox", ["created_at"]),
    ("ix_incidents_resolved_at", "incidents", ["resolved_at"]),
]


def upgrade() -> None:
    op.drop_index("ix_fires_state", table_name="fires")  # one index fewer to write with every change of state
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)
    only_open = sa.text("open_key IS NOT NULL")  # a partial index: the open incidents alone
    op.create_index(
        "ix_incidents_open", "incidents", ["scope", "subject"], sqlite_where=only_open, postgresql_where=only_open
    )


def downgrade() -> None:
    op.drop_index("ix_incidents_open", table_name="incidents")
    for name, table, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
    op.create_index("ix_fires_state", "fires", ["state"])
