"""The problems of one file: where each is written (file:line:column, job), and what a message must not show."""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from scheduler.config.bounds import MAX_DEPTH, MIN_SECRET_LENGTH
from scheduler.config.models import ScenarioRef
from scheduler.errors import ConfigError, ConfigIssue

VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
"""A ``${VAR}`` reference to the environment."""
_MAX_MESSAGE = 400  # an issue's message, cut beyond this (a 1 MB value is not repeated in the log)


class Locator:
    """Finds the line and column where a key path is written in a TOML text.

    The TOML parser keeps no positions, so this reads table headers and ``key =`` lines itself; it is only used to
    point at problems, and falls back to the enclosing table when a key is not found.
    """

    _KEY = r"(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')"
    _KEYS = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
    _HEADER = re.compile(rf"^\s*\[\[?\s*({_KEYS})\s*\]\]?")
    _ASSIGN = re.compile(rf"^(\s*)({_KEYS})\s*=")

    def __init__(self, text: str) -> None:
        self.positions: dict[tuple[str, ...], tuple[int, int]] = {}
        table: tuple[str, ...] = ()
        # Split on "\n" only, as TOML counts lines (str.splitlines also breaks at \x0c, \u2028, ...).
        for number, line in enumerate(text.split("\n"), start=1):
            if header := self._HEADER.match(line):
                table = self._split(header.group(1))
                self.positions.setdefault(table, (number, line.index("[") + 1))
            elif assign := self._ASSIGN.match(line):
                path = table + self._split(assign.group(2))
                self.positions.setdefault(path, (number, len(assign.group(1)) + 1))

    @classmethod
    def _split(cls, keys: str) -> tuple[str, ...]:
        return tuple(part.strip().strip("\"'") for part in re.findall(cls._KEY, keys))

    def find(self, path: tuple[str, ...]) -> tuple[int | None, int | None]:
        for end in range(len(path), 0, -1):
            if path[:end] in self.positions:
                return self.positions[path[:end]]
        return self._enclosing.get(path, (None, None))  # a path inside a dotted header: [a.b.c] for a.b

    @functools.cached_property
    def _enclosing(self) -> dict[tuple[str, ...], tuple[int, int]]:
        # Each beginning of a written key path -> the first place it is written: one dictionary look-up per
        # problem, where scanning every position would cost lines x problems (a file of 4,000 [jobs.<name>.body]
        # tables and no [jobs.<name>] took 20 s to report its 12,000 problems).
        enclosing: dict[tuple[str, ...], tuple[int, int]] = {}
        for keys, place in self.positions.items():
            for end in range(1, len(keys) + 1):
                enclosing.setdefault(keys[:end], place)
        return enclosing


class Issues:
    """Collects ConfigIssues for one file, placing each one with the locator and keeping ${VAR} values out."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.text = text
        self.items: list[ConfigIssue] = []
        self.unset: set[tuple[str, ...]] = set()  # where a ${VAR} was missing (already said; say nothing more)
        self.values: dict[str, str] = {}  # the value of a variable -> ``${VAR}``
        self._hidden = _Hidden()

    @functools.cached_property
    def locator(self) -> Locator:
        # Built on the first problem only: reading every line of a big valid file costs ~0.2 s per 10,000 jobs.
        return Locator(self.text)

    def interpolated(self, written: str, result: str, values: Mapping[str, str]) -> None:
        """``written`` became ``result`` with these variables' ``values``: keep them out of every message."""
        only = VARIABLE.fullmatch(written)
        if result:
            # Validators quote what they reject ('value'): that is named as a whole, before any value in it.
            self._hidden.add(0, repr(result), f"${{{only.group(1)}}}" if only else repr(written))
        for name, value in values.items():
            if value not in self.values:
                self.values[value] = f"${{{name}}}"
                if len(value) >= MIN_SECRET_LENGTH:
                    self._hidden.add(1, value, self.values[value])

    def add(self, where: tuple[str, ...], message: str) -> None:
        self.items.append(self._placed(where, message))

    def add_validation(self, where: tuple[str, ...], error: ValidationError, known: Mapping[str, Any]) -> None:
        details = error.errors()
        flawed = {detail["loc"][0] for detail in details if len(detail["loc"]) > 1}
        for detail in details:
            loc = tuple(str(part) for part in detail["loc"])
            if detail["type"] == "too_short" and detail["loc"] and detail["loc"][0] in flawed:
                continue  # the list's own items are wrong: those errors say more than "too short"
            if (*where, *loc[:1]) in self.unset:
                continue  # a missing ${VAR} left this value empty: that was said
            if detail["type"] == "extra_forbidden":
                message = f"unknown key {loc[-1]!r}"
                keys = ScenarioRef.model_fields if loc[0] == "scenarios" else known
                close = difflib.get_close_matches(loc[-1], list(keys), n=1)
                if close:
                    message += f" (did you mean {close[0]!r}?)"
            else:
                text = detail["msg"].removeprefix("Value error, ")
                message = f"{'.'.join(loc)}: {text}" if loc else text
            self.items.append(self._placed(where + loc, message))

    def _placed(self, where: tuple[str, ...], message: str) -> ConfigIssue:
        line, column = self.locator.find(where)
        job = where[1] if len(where) > 1 and where[0] == "jobs" else None
        return ConfigIssue(path=str(self.path), line=line, column=column, job=job, message=self.redacted(message))

    def redacted(self, message: str) -> str:
        """The message with every ${VAR} value replaced by the variable's name, cut to a readable length."""
        message = self._hidden.replace(message)
        if len(message) <= _MAX_MESSAGE:
            return message
        # Cut in the middle: the start names the key and the value, the end says what is wrong with it.
        return message[: _MAX_MESSAGE // 2] + "…" + message[-(_MAX_MESSAGE // 2 - 1) :]

    def error(self) -> ConfigError:
        return ConfigError(sorted(self.items, key=lambda issue: (issue.line or 0, issue.column or 0)))


class _Hidden:
    """The texts a message must not show, each with how it is named instead, and finding them in a message.

    A text is replaced in a fixed order: its kind (a whole interpolated string, then a variable's value), then the
    longest first, then the first one met in the file. Only the texts a message holds are tried, found among its
    own substrings of each length a hidden text has: trying each of 4,000 values on each of 4,000 messages took
    20 s (and grows with the square of the file).
    """

    def __init__(self) -> None:
        self.names: dict[tuple[int, str], str] = {}  # (kind, text) -> ``${VAR}``, or the text as written
        self.ranks: dict[tuple[int, str], int] = {}  # (kind, text) -> when it was first met
        self.kinds: dict[str, set[int]] = {}
        self.by_length: dict[int, set[str]] = {}

    def add(self, kind: int, text: str, name: str) -> None:
        self.names[(kind, text)] = name
        if (kind, text) not in self.ranks:
            self.ranks[(kind, text)] = len(self.ranks)
            self.kinds.setdefault(text, set()).add(kind)
            self.by_length.setdefault(len(text), set()).add(text)

    def replace(self, message: str) -> str:
        held: list[tuple[int, str]] = []
        for length, texts in self.by_length.items():
            if length <= len(message):
                found = texts.intersection(
                    message[start : start + length] for start in range(len(message) - length + 1)
                )
                held.extend((kind, text) for text in found for kind in self.kinds[text])
        for kind, text in sorted(held, key=lambda key: (key[0], -len(key[1]), self.ranks[key])):
            message = message.replace(text, f"(the value of {self.names[(kind, text)]})")
        return message


def position(text: str, offset: int) -> tuple[int, int]:
    """The line and column (from 1) of a character of the text."""
    return text.count("\n", 0, offset) + 1, offset - text.rfind("\n", 0, offset)


def too_deep(text: str) -> tuple[int | None, int | None]:
    """Roughly where a text nests too deeply: the first bracket past MAX_DEPTH, else the first long dotted key."""
    depth = 0
    for offset, character in enumerate(text):
        if character in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return position(text, offset)
        elif character in "]}":
            depth = max(depth - 1, 0)
    for number, line in enumerate(text.split("\n"), start=1):
        if line.count(".") > MAX_DEPTH:
            return number, 1
    return None, None
