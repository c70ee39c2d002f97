"""fire leases: which process works on an unfinished fire, and until when

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from scheduler.store import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("fires") as batch:
        batch.add_column(sa.Column("owner", sa.String(100), nullable=True))
        batch.add_column(sa.Column("lease_until", UTCDateTime(), nullable=True))
        batch.create_index("ix_fires_state_lease", ["state", "lease_until"])


def downgrade() -> None:
    with op.batch_alter_table("fires") as batch:
        batch.drop_index("ix_fires_state_lease")
        batch.drop_column("lease_until")
        batch.drop_column("owner")
