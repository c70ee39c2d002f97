"""The database: SQLAlchemy 2 models, Alembic upgrades, and the repository the daemon and CLI use.

A *fire* is one slot of one job: claimed (a row under a unique (job, slot) constraint, written before anything
is sent), then submitted (Cekura's result id) and finished (an outcome), or skipped with a reason. Each run of a
finished result is a row of ``runs``. Alerts go through incidents and an outbox written in the same transaction
as the outcome that caused them. The store owns every session: callers get plain dataclasses back, and every
database failure becomes a ``StoreError``. The API key is never stored.
"""

from scheduler.store.alerting import (
    Incident,
    IncidentAction,
    IncidentRow,
    JobHistory,
    Notice,
    OutboxItem,
    OutboxRow,
    Router,
)
from scheduler.store.database import create_db_engine, fresh_schema_url, migrations_dir, upgrade_database
from scheduler.store.repository import Store
from scheduler.store.schema import (
    CLAIMED,
    FINISHED,
    SKIPPED,
    SUBMITTED,
    Base,
    ConfigChange,
    ConfigChangeRow,
    Fire,
    Hold,
    RunRecord,
    UTCDateTime,
)
from scheduler.verdicts import FAILED, PASSED

__all__ = [
    "CLAIMED",
    "FAILED",
    "FINISHED",
    "PASSED",
    "SKIPPED",
    "SUBMITTED",
    "Base",
    "ConfigChange",
    "ConfigChangeRow",
    "Fire",
    "Hold",
    "Incident",
    "IncidentAction",
    "IncidentRow",
    "JobHistory",
    "Notice",
    "OutboxItem",
    "OutboxRow",
    "Router",
    "RunRecord",
    "Store",
    "UTCDateTime",
    "create_db_engine",
    "fresh_schema_url",
    "migrations_dir",
    "upgrade_database",
]
