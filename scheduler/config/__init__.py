"""jobs.toml: parse, interpolate ``${VAR}`` from the environment, validate, and report every problem at once.

Every problem becomes a ``ConfigIssue`` naming the file, the line and column, and the job. Unknown keys are
rejected (with a suggestion when one is close), so a misspelt setting never silently does nothing. Whatever the
bytes of the file, the loader raises nothing but a ``ConfigError``: a daemon that reloads a bad save keeps
running the previous version and says why. A value that came from ``${VAR}`` is never shown in an error (the
error names the variable), and ``Config.secrets`` lists what other modules must redact.

The roles, each importing only those before it:

- ``bounds``: the limits of values (durations, file size, nesting, URL length) and the checks of single values;
- ``models``: the pydantic models of a valid file (``Job``, ``DaemonConfig``, ``AlertChannel``, ``Config``, ...);
- ``alert_urls``: what Apprise accepts, and which parts of an alert URL are credentials;
- ``issues``: where a problem is written (file:line:column, job), and keeping ``${VAR}`` values out of messages;
- ``parsing``: reading the file and its TOML, interpolation, and building the models (``load_config``);
- ``diff``: what changed between two versions (``diff_configs``, ``SCHEDULE_KEYS``);
- ``source``: the file a daemon runs from, watched and loaded once a version is finished (``ConfigSource``).
"""

from scheduler.config.alert_urls import CUSTOM_SCHEMES, alert_url_secrets
from scheduler.config.bounds import (
    DURATION_BOUNDS,
    MAX_DEPTH,
    MAX_FILE_BYTES,
    MAX_URL_LENGTH,
    MIN_SECRET_LENGTH,
)
from scheduler.config.diff import SCHEDULE_KEYS, ConfigDiff, diff_configs
from scheduler.config.models import (
    RESERVED_BODY_KEYS,
    AlertChannel,
    CatchUp,
    Config,
    DaemonConfig,
    HistoryConfig,
    IncidentPolicy,
    Job,
    JobDefaults,
    Maintenance,
    Overlap,
    ScenarioRef,
    incident_policy,
)
from scheduler.config.parsing import digest, load_config, parse_config
from scheduler.config.source import ConfigSource
from scheduler.endpoints import ENDPOINTS

__all__ = [
    "CUSTOM_SCHEMES",
    "DURATION_BOUNDS",
    "ENDPOINTS",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_URL_LENGTH",
    "MIN_SECRET_LENGTH",
    "RESERVED_BODY_KEYS",
    "SCHEDULE_KEYS",
    "AlertChannel",
    "CatchUp",
    "Config",
    "ConfigDiff",
    "ConfigSource",
    "DaemonConfig",
    "HistoryConfig",
    "IncidentPolicy",
    "Job",
    "JobDefaults",
    "Maintenance",
    "Overlap",
    "ScenarioRef",
    "alert_url_secrets",
    "diff_configs",
    "digest",
    "incident_policy",
    "load_config",
    "parse_config",
]
