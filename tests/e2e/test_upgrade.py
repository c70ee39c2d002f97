"""Upgrading: a database written by the oldest schema, with history and a result in flight, is upgraded by the new
version's daemon as it starts (two replicas at once on PostgreSQL), and nothing recorded is lost."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData

from scheduler.simulator import Simulator
from scheduler.store import Base, Store, create_db_engine, migrations_dir, upgrade_database
from tests.conftest import API_KEY, DaemonProcess, run_environment, wait_until

JOBS = """
[daemon]
poll_interval = "1s"
poll_max_interval = "1s"

[jobs.smoke]
every = "1s"
agent = 12
scenarios = [101]
overlap = "allow"

[jobs.nightly]
cron = "0 3 * * *"
agent = 12
scenarios = [101]
"""


def _submitted_at_the_simulator(simulator: Simulator, name: str) -> int:
    """A result that the old version submitted before it was stopped: the simulator has it, still running."""
    answer = httpx.post(
        f"{simulator.base_url}/test_framework/v1/scenarios/run_scenarios_livekit_v2/",
        headers={"X-CEKURA-API-KEY": API_KEY},
        json={"name": name, "agent": 12, "scenarios": [{"scenario": 101}], "frequency": 1},
        timeout=10,
    )
    answer.raise_for_status()
    return int(answer.json()["id"])


def _oldest_history(now: datetime, in_flight_result: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Fires and runs as the first schema holds them (no lease columns): nightly's last three slots (a pass with
    its run, a failure with its run, a skip), and a submission of smoke whose result the old version was still
    following when it stopped."""
    last = now.replace(hour=3, minute=0, second=0) - timedelta(days=0 if now.hour >= 3 else 1)

    def fire(number: int, slot: datetime, job: str = "nightly", **values: Any) -> dict[str, Any]:
        return {
            "id": number,
            "job": job,
            "slot": slot,
            "trigger": "schedule",
            "fired_at": slot + timedelta(milliseconds=40),
            "submission_name": f"{job}@{slot:%Y-%m-%dT%H:%M:%SZ}",
            "endpoint": "run_scenarios_livekit_v2",
            "runs_requested": 1,
            **values,
        }

    fires = [
        fire(
            1,
            last - timedelta(days=2),
            state="finished",
            submitted_at=last - timedelta(days=2),
            result_id=7001,
            result_status="completed",
            success_rate=100.0,
            outcome="passed",
            finished_at=last - timedelta(days=2, minutes=-2),
        ),
        fire(
            2,
            last - timedelta(days=1),
            state="finished",
            submitted_at=last - timedelta(days=1),
            result_id=7002,
            result_status="completed",
            success_rate=0.0,
            outcome="failed",
            error="run 55502 failed",
            failed_reasons='[{"description": "the agent hung up"}]',
            finished_at=last - timedelta(days=1, minutes=-2),
        ),
        fire(3, last, state="skipped", skip_reason="overlap", finished_at=last),
        fire(
            4,
            now - timedelta(seconds=5),
            "smoke",
            state="submitted",
            submitted_at=now - timedelta(seconds=5),
            poll_deadline=now + timedelta(hours=1),
            result_id=in_flight_result,
            result_status="running",
        ),
    ]
    runs = [
        {"fire_id": 1, "run_id": 55501, "scenario": 101, "status": "completed", "success": True, "duration": "41s"},
        {
            "fire_id": 2,
            "run_id": 55502,
            "scenario": 101,
            "status": "completed",
            "success": False,
            "error_message": "the agent hung up",
            "failed_metrics": '[{"name": "greeting", "explanation": "no greeting"}]',
        },
    ]
    return fires, runs


def test_the_new_version_upgrades_the_oldest_schema_as_it_starts_and_loses_nothing(
    tmp_path: Path, simulator: Simulator, database_url: str
) -> None:
    scripts = ScriptDirectory(str(migrations_dir()))
    oldest = scripts.get_base()
    assert oldest is not None
    engine = create_db_engine(database_url)
    try:
        upgrade_database(engine, revision=oldest)
        now = datetime.now(UTC).replace(microsecond=0)
        in_flight = _submitted_at_the_simulator(simulator, f"smoke@{now - timedelta(seconds=5):%Y-%m-%dT%H:%M:%SZ}")
        fires, runs = _oldest_history(now, in_flight)
        tables = MetaData()
        with engine.begin() as connection:
            tables.reflect(connection)  # the tables exactly as the oldest revision made them
            assert "owner" not in tables.tables["fires"].columns
            for table, rows in (("fires", fires), ("runs", runs)):
                for row in rows:  # one by one: the rows fill different columns
                    connection.execute(tables.tables[table].insert(), row)
            if connection.dialect.name == "postgresql":  # ids were given: move the sequence past them
                connection.exec_driver_sql("SELECT setval('fires_id_seq', 4)")
        (tmp_path / "jobs.toml").write_text(JOBS)
        env = run_environment(tmp_path / "jobs.toml", database_url, simulator)
        # Several replicas of the new version start at once on PostgreSQL; one SQLite file serves one daemon.
        replicas = 2 if engine.dialect.name == "postgresql" else 1
        daemons = [DaemonProcess(env, tmp_path / f"replica-{index}.log") for index in range(replicas)]
        try:
            for daemon in daemons:
                daemon.wait_started()
            store = Store(engine=engine)

            def followed_and_firing() -> bool:
                taken = store.get_fire(4)
                new = [fire for fire in store.recent_fires(job="smoke", limit=50) if fire.id > 4]
                return taken is not None and taken.state == "finished" and any(f.outcome == "passed" for f in new)

            wait_until(followed_and_firing, timeout=30)
        finally:
            for daemon in daemons:
                daemon.terminate()

        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []  # the schema is the newest
            assert context.get_current_revision() == scripts.get_current_head()
        for before in fires[:3]:
            after = store.get_fire(before["id"])
            assert after is not None
            assert (after.job, after.slot, after.state, after.outcome, after.result_id, after.skip_reason) == (
                before["job"],
                before["slot"],
                before["state"],
                before.get("outcome"),
                before.get("result_id"),
                before.get("skip_reason"),
            )
            assert after.error == before.get("error")
        passed, failed = store.get_fire(1), store.get_fire(2)
        assert passed is not None and [(run.run_id, run.success) for run in passed.runs] == [(55501, True)]
        assert failed is not None and [(run.run_id, run.error_message) for run in failed.runs] == [
            (55502, "the agent hung up")
        ]
        followed = store.get_fire(4)
        assert followed is not None and (followed.result_id, followed.outcome) == (in_flight, "passed")
    finally:
        engine.dispose()
