"""Mutated jobs.toml files: the loader raises config errors only, and `validate` exits 0 or 1, never a traceback.

Each example starts from the repository's jobs.toml or a small valid file and mutates it the ways a bad save,
a careless edit or an attacker would: flipped bytes, random bytes and text, lines deleted or doubled, a value
replaced by a random TOML value (huge numbers, long strings, deep nesting, odd zones, durations and crons), a
file cut short. Derandomized and bounded: the same examples on every run, a few seconds in all.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.cli import main
from scheduler.config import ConfigSource, load_config
from scheduler.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SECRET = "TOKENBBBB2"  # the value of ${EVERY_VAR}: it must never show in an error
ENV = {
    "SLACK_TOKEN_A": "T0AAAAAA",
    "SLACK_TOKEN_B": "B0BBBBBB",
    "SLACK_TOKEN_C": "CCCCCCCCtoken99",
    "EVERY_VAR": SECRET,
    "ZONE_VAR": "Europe/Paris",
    "TIMEOUT_VAR": "30m",
}
SMALL = [
    b'[jobs.a]\nevery = "15m"\nagent = 1\nscenarios = [1]\n',
    b'[defaults]\ntimezone = "Europe/Paris"\nagent = 7\nresult_timeout = "${TIMEOUT_VAR}"\n\n'
    b'[jobs.b]\ncron = "30 2 * * 1-5"\nscenarios = [{ id = 5, publish_data_message = { lang = "fr" } }]\n'
    b'jitter = "30s"\ncatch_up = "all"\ncatch_up_window = "2h"\n\n[jobs.b.body]\nconcurrency_limit = 2\n',
    b'[daemon]\npoll_interval = "5s"\nlease = "30s"\nalerts = ["ops"]\n\n[history]\nretention = "90d"\n\n'
    b'[alerts.ops]\nurl = "json://127.0.0.1:9/${SLACK_TOKEN_C}"\nremind_every = "4h"\n\n'
    b'[maintenance.sunday]\ncron = "0 22 * * 0"\nduration = "2h"\ntimezone = "${ZONE_VAR}"\n',
]
SEEDS = [(REPO / "jobs.toml").read_bytes(), *SMALL]

DURATIONS = ["99999999999d", "999999999d", "366d", "367d", "7d", "8d", "0s", "1s", "1h30m", "1 h", "-1m", "1.5h"]
ZONES = ["US", "America", "../../etc/passwd", "/etc/passwd", "a" * 300, "Europe/Paris", "leapseconds", "UTC\\u0000"]
CRON_FIELDS = ["*", "0", "3", "30", "31", "2", "*/5", "1-5", "5-1", "*/0", "mon", "last", "99", ",", "L", "29"]
URLS = ["slak://TokenA/TokenB", "slack://TokenA/TokenB/TokenC", "json://[::1", "pagerduty://ikey1@akey2", "console://"]
WORDS = [*DURATIONS, *ZONES, *URLS, "${EVERY_VAR}", "${MISSING_VAR}", "${ZONE_VAR}", "x" * 10_000]


def toml_string(text: str) -> bytes:
    # json.dumps writes a TOML basic string, but for lone surrogates: those become bytes that are not UTF-8.
    return json.dumps(text, ensure_ascii=False).encode("utf-8", "surrogatepass")


def toml_float(number: float) -> bytes:
    if math.isnan(number):
        return b"nan"
    if math.isinf(number):
        return b"inf" if number > 0 else b"-inf"
    return repr(number).encode()


def nested(depth: int) -> bytes:
    return b"[" * depth + b"1" + b"]" * depth


scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(lambda n: str(n).encode()),
    st.sampled_from([b"9" * 5000, b"0x" + b"f" * 5000, b"1_000", b"0o777", b"true", b"2026-01-01", b"07:32:00"]),
    st.sampled_from([b"1979-05-27T07:32:00Z", b"9999-12-31T23:59:59-23:59", b"0001-01-01T00:00:00+23:59"]),
    st.floats(allow_nan=True, allow_infinity=True).map(toml_float),
    st.text(max_size=12).map(toml_string),
    st.sampled_from(WORDS).map(toml_string),
    st.lists(st.sampled_from(CRON_FIELDS), min_size=4, max_size=6).map(lambda fields: toml_string(" ".join(fields))),
    st.sampled_from([31, 32, 33, 401, 2000]).map(nested),
)


def array(items: list[bytes]) -> bytes:
    return b"[" + b", ".join(items) + b"]"


def inline_table(items: list[bytes]) -> bytes:
    return b"{ " + b", ".join(b"k%d = %s" % pair for pair in enumerate(items)) + b" }"


values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3).map(array), st.lists(inner, max_size=3).map(inline_table)),
    max_leaves=6,
)
_ASSIGNMENT = re.compile(rb"^([ \t]*[A-Za-z0-9_.\"-]+[ \t]*=[ \t]*)(.*)$", re.MULTILINE)

Mutation = Callable[[st.DrawFn, bytes], bytes]


def flip(draw: st.DrawFn, data: bytes) -> bytes:
    if not data:
        return data
    at = draw(st.integers(0, len(data) - 1))
    return data[:at] + bytes([data[at] ^ (1 << draw(st.integers(0, 7)))]) + data[at + 1 :]


def insert_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    at = draw(st.integers(0, len(data)))
    return data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]


def insert_text(draw: st.DrawFn, data: bytes) -> bytes:
    at = draw(st.integers(0, len(data)))
    return data[:at] + draw(st.text(min_size=1, max_size=8)).encode("utf-8", "surrogatepass") + data[at:]


def delete_line(draw: st.DrawFn, data: bytes) -> bytes:
    lines = data.split(b"\n")
    del lines[draw(st.integers(0, len(lines) - 1))]
    return b"\n".join(lines)


def duplicate_line(draw: st.DrawFn, data: bytes) -> bytes:
    lines = data.split(b"\n")
    at = draw(st.integers(0, len(lines) - 1))
    return b"\n".join([*lines[: at + 1], lines[at], *lines[at + 1 :]])


def replace_value(draw: st.DrawFn, data: bytes) -> bytes:
    found = list(_ASSIGNMENT.finditer(data))
    if not found:
        return data
    match = draw(st.sampled_from(found))
    return data[: match.start(2)] + draw(values) + data[match.end(2) :]


def cut_short(draw: st.DrawFn, data: bytes) -> bytes:  # a file read in the middle of a write
    return data[: draw(st.integers(0, len(data)))]


# Replacing a value is listed thrice: most byte-level mutations end in a TOML syntax error, the values reach the models.
MUTATIONS: list[Mutation] = [
    flip,
    insert_bytes,
    insert_text,
    delete_line,
    duplicate_line,
    cut_short,
    replace_value,
    replace_value,
    replace_value,
]


@st.composite
def mutated_files(draw: st.DrawFn, steps: int = 4) -> bytes:
    data = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, steps))):
        data = draw(st.sampled_from(MUTATIONS))(draw, data)
    return data


# Schedules that are mostly valid, for validate to describe; at most twice an hour, as validate counts a month's
# slots one by one (a "* * * * *" job alone takes it a second).
SCHEDULE_FIELDS = [
    ["0", "30", "5,35", "59"],
    ["*", "3", "*/4", "0-23/6", "2"],
    ["*", "1", "29", "30", "31", "last", "1-7"],
    ["*", "2", "feb", "1-12/3", "4,6,9,11"],
    ["*", "0", "7", "1-5", "sun", "sunday", "mon-fri", "5-7"],
]
REAL_ZONES = ["UTC", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "Asia/Kathmandu", "Pacific/Chatham"]
_SCHEDULE = re.compile(rb'^(cron|timezone|every) = "[^"]*"', re.MULTILINE)


@st.composite
def rescheduled_files(draw: st.DrawFn) -> bytes:
    """A seed whose crons, intervals and zones are replaced by random, mostly valid ones."""

    def replace(match: re.Match[bytes]) -> bytes:
        if match.group(1) == b"cron":
            value = " ".join(draw(st.sampled_from(choices)) for choices in SCHEDULE_FIELDS)
        elif match.group(1) == b"every":
            value = draw(st.sampled_from(["1s", "37s", "1h30m", "366d", "7d"]))
        else:
            value = draw(st.sampled_from(REAL_ZONES))
        return match.group(1) + b' = "' + value.encode() + b'"'

    return _SCHEDULE.sub(replace, draw(st.sampled_from(SEEDS)))


FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def assert_clean(error: ConfigError) -> None:
    """A config error as a user should see it: placed issues, no bug of the loader, no secret."""
    assert error.issues
    text = str(error)
    assert "the loader failed" not in text, text  # the safety net caught a bug: the fuzz found one
    assert SECRET not in text, text


@settings(FUZZ, max_examples=500)
@given(data=mutated_files())
def test_the_loader_raises_nothing_but_config_errors(folder: Path, data: bytes) -> None:
    path = folder / "jobs.toml"
    path.write_bytes(data)
    try:
        config = load_config(path, env=ENV)
    except ConfigError as error:
        assert_clean(error)
    else:  # SECRET is in no seed: where a value holds it, it came from ${EVERY_VAR}, and is listed for redaction
        urls = [channel.url.get_secret_value() for channel in config.channels.values()]
        if SECRET in repr(config.jobs) + repr(config.maintenance) + repr(urls):
            assert SECRET in config.secrets
    # The daemon's reader: the same, read twice (no wait here) before it is parsed.
    source = ConfigSource(path, env=ENV, sleep=lambda seconds: None)
    try:
        source.load()
    except ConfigError as error:
        assert_clean(error)


@settings(FUZZ, max_examples=80)
@given(data=st.one_of(mutated_files(steps=2), rescheduled_files()))  # valid files too: validate describes them
def test_validate_exits_0_or_1_and_never_shows_a_traceback(folder: Path, data: bytes) -> None:
    path = folder / "validate.toml"
    path.write_bytes(data)
    result = CliRunner().invoke(main, ["validate", "--count", "2", str(path)], env=ENV)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code in (0, 1), result.output
    assert "Traceback" not in result.output
    assert SECRET not in result.output


@pytest.mark.parametrize("seed", SEEDS)
def test_every_seed_is_valid_so_that_mutations_start_from_a_working_file(folder: Path, seed: bytes) -> None:
    path = folder / "seed.toml"
    path.write_bytes(seed)
    assert load_config(path, env=ENV).jobs or b"[jobs." not in seed
