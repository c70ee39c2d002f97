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
        for keys, position in self.positions.items():  # a path inside a dotted header: [a.b.c] for a.b
            if keys[: len(path)] == path:
                return position
        return None, None


class Issues:
    """Collects ConfigIssues for one file, placing each one with the locator and keeping ${VAR} values out."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.text = text
        self.items: list[ConfigIssue] = []
        self.unset: set[tuple[str, ...]] = set()  # where a ${VAR} was missing (already said; say nothing more)
        # An interpolated string -> how an error names it (``${VAR}``, or the text as written in the file).
        self._written: dict[str, str] = {}
        self.values: dict[str, str] = {}  # the value of a variable -> ``${VAR}``

    @functools.cached_property
    def locator(self) -> Locator:
        # Built on the first problem only: reading every line of a big valid file costs ~0.2 s per 10,000 jobs.
        return Locator(self.text)

    def interpolated(self, written: str, result: str, names: list[str], env: Mapping[str, str]) -> None:
        only = VARIABLE.fullmatch(written)
        if result:
            self._written[result] = f"${{{only.group(1)}}}" if only else repr(written)
        for name in names:
            self.values.setdefault(env[name], f"${{{name}}}")

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
        # Validators quote what they reject ('value'): that is named as a whole first, then any value left.
        for result in sorted(self._written, key=len, reverse=True):
            message = message.replace(repr(result), f"(the value of {self._written[result]})")
        for value in sorted(self.values, key=len, reverse=True):
            if len(value) >= MIN_SECRET_LENGTH:
                message = message.replace(value, f"(the value of {self.values[value]})")
        if len(message) <= _MAX_MESSAGE:
            return message
        # Cut in the middle: the start names the key and the value, the end says what is wrong with it.
        return message[: _MAX_MESSAGE // 2] + "…" + message[-(_MAX_MESSAGE // 2 - 1) :]

    def error(self) -> ConfigError:
        return ConfigError(sorted(self.items, key=lambda issue: (issue.line or 0, issue.column or 0)))


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
