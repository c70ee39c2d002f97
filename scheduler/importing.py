"""Cekura's own scheduled jobs (``/schedules/v1/cron-jobs/``) written as jobs.toml entries.

Each cron job becomes a ``[jobs.<name>]`` table: its cron and timezone, its endpoint (from ``execution_mode``),
agent, scenarios or tags, frequency, personalities, and ``enabled`` from ``is_active``. Cron jobs are read
tolerantly (any field may be missing or of another type); every entry written is checked by the same loader as
``validate``, and one that would not pass is written commented out, with the reason, for a person to finish.
Pure: no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from scheduler.config import parse_config
from scheduler.endpoints import ENDPOINTS
from scheduler.errors import ConfigError

# Cekura's execution modes that name a jobs.toml endpoint (``ello`` has no run endpoint in the document).
MODES = frozenset(
    {"voice", "text", "sip", "vapi_webrtc", "retell_webrtc", "elevenlabs", "livekit_v2", "pipecat_v2", "agora"}
)
_NAME = re.compile(r"[^A-Za-z0-9_-]+")
_NOTIFY = {
    "failure": "Cekura notified on failure",
    "success": "Cekura notified on success",
    "both": "Cekura notified on success and failure",
}


def _value(value: Any) -> str:
    """A TOML value: JSON's strings, numbers, booleans and arrays are TOML's too."""
    return json.dumps(value, ensure_ascii=False)


def _ints(value: Any) -> list[int]:
    items = value if isinstance(value, list) else []
    return [item for item in items if isinstance(item, int) and not isinstance(item, bool) and item > 0]


def _scenario_ids(job: dict[str, Any]) -> list[int]:
    """The cron job's scenarios: ``scenario_ids``, else the ids of ``scenarios_data``."""
    ids = _ints(job.get("scenario_ids"))
    if not ids and isinstance(job.get("scenarios_data"), list):
        ids = _ints([item.get("id") for item in job["scenarios_data"] if isinstance(item, dict)])
    return ids


def _name(job: dict[str, Any], taken: set[str]) -> str:
    """A job name from the cron job's name (letters, digits, ``-`` and ``_``), unique in the file."""
    raw = job.get("name")
    number = job.get("id") if isinstance(job.get("id"), int) else len(taken) + 1
    base = _NAME.sub("-", raw if isinstance(raw, str) else "").strip("-_")[:80] or f"cekura-{number}"
    name, suffix = base, 2
    while name.lower() in taken:
        name, suffix = f"{base}-{suffix}", suffix + 1
    taken.add(name.lower())
    return name


def _entry(job: dict[str, Any], name: str) -> tuple[list[str], list[str], list[str]]:
    """The lines of one job's table, the notes that go above it (what is lost), and why a person must finish it."""
    notes: list[str] = []
    unfinished: list[str] = []
    mode = job.get("execution_mode")
    if not isinstance(mode, str):
        mode = "text" if job.get("run_as_text") is True else "voice"
    endpoint = mode if mode in MODES else None
    lines = [f"[jobs.{name}]"]
    cron = job.get("crontab_expression")
    lines.append(f"cron = {_value(cron if isinstance(cron, str) else '')}")
    zone = job.get("timezone")
    if isinstance(zone, str) and zone:
        lines.append(f"timezone = {_value(zone)}")
    if endpoint is None:
        unfinished.append(f"execution mode {mode!r} has no run endpoint in cekura-scheduler: choose one")
        endpoint = "voice"
    lines.append(f"endpoint = {_value(endpoint)}")
    described = ENDPOINTS[endpoint]
    agent = job.get("agent")
    if isinstance(agent, int) and not isinstance(agent, bool) and described.agent_field is not None:
        lines.append(f"agent = {agent}")
    scenarios, tags = _scenario_ids(job), [tag for tag in job.get("tags") or [] if isinstance(tag, str) and tag]
    if scenarios:
        lines.append(f"scenarios = {_value(scenarios)}")
        if tags:
            notes.append(f"it also had tags {', '.join(tags)}: Cekura takes scenarios or tags, here scenarios")
    elif tags:
        lines.append(f"tags = {_value(tags)}")
    frequency = job.get("frequency")
    if isinstance(frequency, int) and not isinstance(frequency, bool) and frequency != 1:
        lines.append(f"frequency = {frequency}")
    lines.append(f"enabled = {_value(job.get('is_active') is not False)}")
    body = {}
    personalities = _ints(job.get("personalities")) or _ints([job.get("personality")])
    if personalities and "personality_ids" in described.fields:
        body["personality_ids"] = personalities
    for key in described.required:
        if key not in ("scenarios", "frequency"):
            unfinished.append(f"the {endpoint} endpoint needs body.{key}, which Cekura's cron job does not say")
    if body:
        lines.append(f"body = {{ {', '.join(f'{key} = {_value(value)}' for key, value in body.items())} }}")
    if (notify := job.get("notify_on")) in _NOTIFY:
        notes.append(f"{_NOTIFY[notify]}: set alerts = [...] to hear about it here")
    return lines, notes, unfinished


def cron_jobs_as_toml(jobs: Iterable[Any], *, source: str) -> tuple[str, int, int]:
    """jobs.toml text for Cekura's cron jobs: (text, entries written, entries written commented out)."""
    out = [
        f"# Imported from Cekura's scheduled jobs ({source}).",
        "# Deactivate each one in Cekura once it runs here, or every slot runs (and is paid for) twice.",
        "",
    ]
    taken: set[str] = set()
    written = commented = 0
    for job in jobs:
        if not isinstance(job, dict):
            continue
        name = _name(job, taken)
        lines, notes, unfinished = _entry(job, name)
        problems = unfinished or _problems(lines)
        title = job.get("name") if isinstance(job.get("name"), str) else name
        out.append(f"# Cekura cron job {job.get('id', '?')}: {title!r}")
        out.extend(f"# note: {note}" for note in notes)
        if problems:
            out.extend(f"# to finish by hand: {problem}" for problem in problems)
            out.extend(f"# {line}" for line in lines)
            commented += 1
        else:
            out.extend(lines)
        written += 1
        out.append("")
    return "\n".join(out), written, commented


def _problems(lines: list[str]) -> list[str]:
    """What ``validate`` would say of one entry (nothing when it passes)."""
    try:
        parse_config("\n".join(lines) + "\n", path=Path("import.toml"), env={})
    except ConfigError as error:
        return [issue.message for issue in error.issues]
    return []
