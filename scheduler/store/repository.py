"""The repository: ``Store``, every read and write the scheduler makes, composed of one group of queries per concern.

Each group is a small class over the same engine and sessions (``Sessions``), mixed in here rather than held and
delegated to: the daemon, web and CLI call ``store.claim(...)``, and a forwarding method per query would repeat
every signature a second time.
"""

from __future__ import annotations

from sqlalchemy import text

from scheduler.store.alerting import AlertingQueries
from scheduler.store.fires import FireQueries
from scheduler.store.history import HistoryQueries
from scheduler.store.holds import HoldQueries
from scheduler.store.leases import LeaseQueries


class Store(FireQueries, LeaseQueries, HoldQueries, HistoryQueries, AlertingQueries):
    """The repository: every read and write the scheduler makes, each in its own short transaction."""

    def ping(self) -> None:
        """Whether the database would take a write now: on SQLite a write lock taken and let go at once (a
        plain read passes while another process holds the lock), on PostgreSQL a round trip."""
        with self._session("checking that the database answers") as session:
            if self.engine.dialect.name == "sqlite":
                session.connection().exec_driver_sql("BEGIN IMMEDIATE")
                session.connection().exec_driver_sql("ROLLBACK")
            else:
                session.execute(text("SELECT 1"))
