"""Editing jobs.toml under a running daemon: atomic renames, in-place writes, an invalid edit and its repair.

The daemon runs in-process against the simulator with a real SQLite file; the file is edited the way editors and
deploy tools do it, and the simulator's log shows exactly which submissions arrived.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from scheduler.config import ConfigSource
from scheduler.simulator import Simulator
from scheduler.store import ConfigChange, ConfigChangeRow, Store
from tests.conftest import (
    HEADER,
    AlertInbox,
    DaemonProcess,
    cekura_http,
    clean_environment,
    eventually,
    make_daemon,
    prepare,
    run_environment,
    submissions_by_name,
    wait_until,
)

Edit = tuple[float, Callable[[Path], None]]


def job(name: str, every: str = "1s", scenario: int = 101) -> str:
    return f'\n[jobs.{name}]\nevery = "{every}"\nagent = 12\nscenarios = [{scenario}]\n'


def write_atomically(text: str) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        temporary = path.with_name(".jobs.toml.swp")
        temporary.write_text(HEADER + text)
        os.replace(temporary, path)  # what editors' rename-on-save and deploy tools do

    return edit


def write_in_place(text: str) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        with path.open("w") as file:  # same inode, new content: what `cat > jobs.toml` does
            file.write(HEADER + text)

    return edit


def run_with_edits(
    tmp_path: Path,
    initial: str,
    edits: list[Edit],
    *,
    simulator: Simulator,
    inbox: AlertInbox,
    database_url: str,
    duration: float,
    each_recorded: bool = False,
    until: Callable[[], bool] | None = None,
) -> tuple[Store, dict[float, datetime]]:
    """Run the daemon for ``duration`` seconds, applying each edit at its time; return when each edit happened.

    With ``until``, it runs on past ``duration`` until that is true (a loaded machine fires later, not less).

    With ``each_recorded``, each edit also waits until the daemon has recorded the one before it (a version
    applied or rejected), and keeps its distance from it: a loaded machine delays the edits, never merges them.
    """
    config, store = prepare(tmp_path, initial, inbox=inbox, database_url=database_url)
    path = tmp_path / "jobs.toml"
    source = ConfigSource(path, env={"INBOX": inbox.url})
    edited: dict[float, datetime] = {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with cekura_http() as http:
            daemon = make_daemon(config, store, http, simulator, config_source=source)
            stop = asyncio.Event()
            task = asyncio.create_task(daemon.run(stop))
            origin = loop.time()  # the instant edit times count from; moved on by each wait for a recording
            for count, (at, edit) in enumerate(edits, start=1):
                await asyncio.sleep(max(0.0, origin + at - loop.time()))
                edit(path)
                edited[at] = datetime.now(UTC)
                if each_recorded:
                    before = loop.time()
                    await eventually(functools.partial(recorded, store, count), within=30.0)
                    origin += loop.time() - before
            await asyncio.sleep(max(0.0, origin + duration - loop.time()))
            if until is not None:
                await eventually(until, within=30.0)
            stop.set()
            await task

    asyncio.run(main())
    return store, edited


def recorded(store: Store, count: int) -> bool:
    return len(config_changes(store)) >= count


def config_changes(store: Store) -> list[ConfigChange]:
    with store.engine.connect() as connection:
        rows = connection.execute(select(ConfigChangeRow).order_by(ConfigChangeRow.id)).all()
    return [
        ConfigChange(id=r.id, at=r.at, path=r.path, digest=r.digest, valid=r.valid, summary=r.summary) for r in rows
    ]


def slots_of(simulator: Simulator, job_name: str) -> list[datetime]:
    return sorted(
        datetime.strptime(name.split("@")[1], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        for name in submissions_by_name(simulator)
        if name.startswith(f"{job_name}@")
    )


def test_an_atomic_rename_adds_and_removes_jobs_without_a_restart(
    tmp_path: Path, simulator: Simulator, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    store, edited = run_with_edits(
        tmp_path,
        job("old"),
        [(2.5, write_atomically(job("new")))],
        simulator=simulator,
        inbox=alert_inbox,
        database_url=sqlite_url,
        duration=6.0,
        until=lambda: len(slots_of(simulator, "new")) >= 2,
    )

    [change] = config_changes(store)
    assert change.valid and change.summary == "added: new; removed: old"
    assert change.at - edited[2.5] < timedelta(seconds=2.5)  # noticed within a couple of seconds
    old, new = slots_of(simulator, "old"), slots_of(simulator, "new")
    assert old and all(slot <= change.at for slot in old)  # nothing of the removed job after the change
    assert new and all(slot > change.at for slot in new)
    assert len(new) >= 2  # the added job keeps firing every second
    assert all(count == 1 for count in submissions_by_name(simulator).values())


def test_an_in_place_write_reschedules_a_changed_job(
    tmp_path: Path, simulator: Simulator, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    store, _ = run_with_edits(
        tmp_path,
        job("a", every="1h") + job("steady", every="1h"),
        [(1.5, write_in_place(job("a", every="1s", scenario=202) + job("steady", every="1h")))],
        simulator=simulator,
        inbox=alert_inbox,
        database_url=sqlite_url,
        duration=5.0,
        until=lambda: len(slots_of(simulator, "a")) >= 2,
    )

    [change] = config_changes(store)
    assert change.summary == "changed: a (every, scenarios)"  # steady is untouched
    slots = slots_of(simulator, "a")
    assert len(slots) >= 2 and all(slot > change.at for slot in slots)
    assert all(entry.body["scenarios"] == [{"scenario": 202}] for entry in simulator.submissions)
    assert slots_of(simulator, "steady") == []


def test_an_invalid_edit_keeps_the_old_jobs_running_and_alerts_once_until_repaired(
    tmp_path: Path, simulator: Simulator, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    broken = job("a") + 'timezon = "UTC"\n' + '\n[jobs.b]\ncron = "61 * * * *"\nagent = 1\nscenarios = [1]\n'
    store, edited = run_with_edits(
        tmp_path,
        job("a"),
        [
            (1.5, write_in_place(broken)),
            (3.0, write_in_place(broken + "# still broken\n")),
            (5.0, write_atomically(job("a") + job("b"))),
        ],
        simulator=simulator,
        inbox=alert_inbox,
        database_url=sqlite_url,
        duration=8.0,
        each_recorded=True,
    )

    rejected, rejected_again, applied = config_changes(store)
    assert not rejected.valid and not rejected_again.valid and applied.valid
    path = tmp_path / "jobs.toml"
    lines = (HEADER + broken).splitlines()
    typo, cron = lines.index('timezon = "UTC"') + 1, lines.index('cron = "61 * * * *"') + 1
    assert f"{path}:{typo}:1: job 'a': unknown key 'timezon' (did you mean 'timezone'?)" in rejected.summary
    assert f"{path}:{cron}:1: job 'b': cron: invalid cron expression '61 * * * *'" in rejected.summary
    assert applied.summary == "added: b"
    # The old version ran on while the file was broken: job a was submitted every second in between.
    during = [slot for slot in slots_of(simulator, "a") if edited[1.5] < slot < edited[5.0] - timedelta(seconds=1)]
    assert len(during) >= 2
    assert slots_of(simulator, "b") and all(slot > applied.at for slot in slots_of(simulator, "b"))
    # One alert per bad version of the file, and one when it is repaired.
    assert [t for t in alert_inbox.titles() if "config" in t] == [
        "[cekura-scheduler] config file invalid",
        "[cekura-scheduler] config file invalid",
        "[cekura-scheduler] RESOLVED: config file invalid",
    ]


def test_bad_saves_of_every_kind_are_rejected_and_the_next_valid_edit_is_applied(
    tmp_path: Path, simulator: Simulator, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    def append_bytes(data: bytes) -> Callable[[Path], None]:
        def edit(path: Path) -> None:
            with path.open("ab") as file:
                file.write(data)  # what `printf '# caf\xe9\n' >> jobs.toml` does

        return edit

    store, edited = run_with_edits(
        tmp_path,
        job("a"),
        [
            (1.5, append_bytes(b"# caf\xe9\n")),
            (3.0, write_in_place(job("a") + 'timezone = "US"\n')),
            (4.5, write_in_place(job("a", every="99999999999d"))),
            (6.0, write_atomically(job("a") + job("b"))),
        ],
        simulator=simulator,
        inbox=alert_inbox,
        database_url=sqlite_url,
        duration=9.0,
        each_recorded=True,
    )

    *rejected, applied = config_changes(store)
    assert [change.valid for change in rejected] == [False, False, False] and applied.valid
    path = tmp_path / "jobs.toml"
    assert f"{path}:{len((HEADER + job('a')).splitlines()) + 1}:" in rejected[0].summary  # the line of the byte
    assert "US" in rejected[1].summary and "99999999999d" in rejected[2].summary
    assert applied.summary == "added: b"
    assert slots_of(simulator, "b") and all(slot > applied.at for slot in slots_of(simulator, "b"))
    assert len([slot for slot in slots_of(simulator, "a") if edited[1.5] < slot < edited[6.0]]) >= 3  # ran on


def test_a_file_written_in_two_halves_is_applied_once_whole_never_half(
    tmp_path: Path, simulator: Simulator, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    whole = (HEADER + job("a") + job("b")).encode()
    cut = whole.index(b"[jobs.b]") + 5  # the second job's table header cut in two: invalid, and no job b

    def first_half(path: Path) -> None:
        with path.open("wb") as file:
            file.write(whole[:cut])

    def second_half(path: Path) -> None:
        with path.open("ab") as file:
            file.write(whole[cut:])

    store, _ = run_with_edits(
        tmp_path,
        job("a"),
        [(1.5, first_half), (1.7, second_half)],  # a slow copy: 200 ms between the two writes
        simulator=simulator,
        inbox=alert_inbox,
        database_url=sqlite_url,
        duration=5.0,
    )

    [change] = config_changes(store)  # the half file was never taken for a version, valid or not
    assert change.valid and change.summary == "added: b"
    assert not [t for t in alert_inbox.titles() if "config" in t]


def test_a_version_that_removes_every_job_is_applied_but_warned_and_announced(
    tmp_path: Path,
    simulator: Simulator,
    alert_inbox: AlertInbox,
    sqlite_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def empty(path: Path) -> None:
        path.write_text("")  # e.g. a deploy that truncated the file

    store, _ = run_with_edits(
        tmp_path,
        job("a"),
        [(1.5, empty)],
        simulator=simulator,
        inbox=alert_inbox,
        database_url=sqlite_url,
        duration=4.0,
    )

    [change] = config_changes(store)
    assert change.valid and change.summary.startswith("removed: a;")
    assert all(slot <= change.at for slot in slots_of(simulator, "a"))
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "every job removed" in r.getMessage()]
    assert warned, "removing every job must not pass at INFO level"
    # Told on the daemon channels of the version it replaced: the empty file has none.
    assert "[cekura-scheduler] every job removed" in alert_inbox.titles()


def test_jobs_command_says_the_file_is_invalid(tmp_path: Path) -> None:
    (tmp_path / "jobs.toml").write_text('[jobs.a]\nevery = "1m"\nagent = 1\nscenarios = [1]\nenabeld = true\n')
    env = clean_environment(
        SCHEDULER_CONFIG=str(tmp_path / "jobs.toml"), SCHEDULER_DATABASE_URL=f"sqlite:///{tmp_path / 's.db'}"
    )
    result = subprocess.run(
        [sys.executable, "-m", "scheduler", "jobs"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "CONFIG INVALID:" in result.stdout and "a running daemon keeps the last valid version" in result.stdout
    assert "unknown key 'enabeld' (did you mean 'enabled'?)" in result.stdout


def test_a_rotated_secret_file_is_applied_at_the_next_reload_though_jobs_toml_is_the_same(
    tmp_path: Path, simulator: Simulator, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    _, store = prepare(tmp_path, job("a", every="1h"), inbox=alert_inbox, database_url=sqlite_url)
    secret = tmp_path / "inbox-url"  # ${INBOX} of the alert channels, as a mounted secret
    secret.write_text(alert_inbox.url + "\n")
    source = ConfigSource(tmp_path / "jobs.toml", env={"INBOX_FILE": str(secret)})
    config = source.load()

    async def main() -> tuple[bool, bool, str]:
        async with cekura_http() as http:
            daemon = make_daemon(config, store, http, simulator, config_source=source)
            unchanged = await daemon.reload()
            secret.write_text(alert_inbox.url + "/rotated\n")
            applied = await daemon.reload()
            return unchanged, applied, daemon.config.channels["team"].url.get_secret_value()

    unchanged, applied, url = asyncio.run(main())
    assert (unchanged, applied, url) == (False, True, alert_inbox.url + "/rotated")
    assert [change.summary for change in config_changes(store)] == ["alert channels: ops, team"]


def catches_sighup(pid: int) -> bool:
    """Whether the process has a handler for SIGHUP (bit 0 of SigCgt in /proc/PID/status)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught, 16) & 1 << (signal.SIGHUP - 1))


def test_a_sighup_during_start_up_is_a_reload_once_running_not_the_end_of_the_daemon(
    tmp_path: Path, simulator: Simulator
) -> None:
    path = tmp_path / "jobs.toml"
    path.write_text(job("a", every="1h"))
    database = tmp_path / "s.db"
    # Another process holds the database: start-up waits on it (busy timeout), the event loop not yet running.
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("CREATE TABLE held (x)")
    holder.execute("BEGIN EXCLUSIVE")
    daemon = DaemonProcess(run_environment(path, f"sqlite:///{database}", simulator), tmp_path / "daemon.log")
    try:
        wait_until(lambda: daemon.process.poll() is not None or catches_sighup(daemon.pid))
        daemon.process.send_signal(signal.SIGHUP)
        holder.execute("ROLLBACK")
        daemon.wait_for("(SIGHUP); environment settings")
        daemon.wait_started()
        daemon.terminate()
    finally:
        holder.close()
        daemon.cleanup()


def test_sighup_reloads_the_running_daemon(tmp_path: Path, simulator: Simulator) -> None:
    path = tmp_path / "jobs.toml"
    path.write_text(job("a", every="1h"))
    database = tmp_path / "s.db"
    daemon = DaemonProcess(run_environment(path, f"sqlite:///{database}", simulator), tmp_path / "daemon.log")
    try:
        daemon.wait_started()
        path.write_text(job("a", every="1s"))
        daemon.process.send_signal(signal.SIGHUP)
        wait_until(lambda: bool(simulator.submissions), timeout=20)
        daemon.terminate()
    finally:
        daemon.cleanup()
    stderr = daemon.output()
    assert "(SIGHUP); environment settings (CEKURA_*, SCHEDULER_*) are read at start only" in stderr
    assert "applied" in stderr and "changed: a (every)" in stderr
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT count(*) FROM config_changes WHERE valid").fetchone()[0] == 1
