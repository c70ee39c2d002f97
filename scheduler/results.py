"""What Cekura reports about a submission: results, runs and metrics, read tolerantly.

Cekura's API document types most fields loosely (counts as strings, ``failed_reasons`` and ``explanation`` as any
JSON, ``runs`` as an object in one view and a list in another, ``success`` optional), so every field here accepts
any JSON value: one of an unexpected type is kept as unknown (None) rather than making the whole answer
unreadable. Only a result detail without an ``id`` or a ``status`` cannot be read, and a search hit needs only an
``id`` to be adopted. Nothing here does I/O; ``scheduler.cekura`` fetches, ``scheduler.verdicts`` decides.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from scheduler.verdicts import RunState, Verdict, is_finished, judge


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.removeprefix("-").isdigit():
            return int(text)
    return None


def _float(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _str(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _word(value: object) -> str | None:
    # A status is a word of Cekura's list; a number or an object in its place is no status at all.
    return value if isinstance(value, str) else None


def _bool(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def as_text(value: object) -> str | None:
    """Any JSON value as one line a person can read (an explanation may be a string or a list of strings)."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = [as_text(item) for item in value]
        return " ".join(part for part in parts if part) or None
    return json.dumps(value, default=str)


def _datetime(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


AnyInt = Annotated[int | None, BeforeValidator(_int)]
AnyFloat = Annotated[float | None, BeforeValidator(_float)]
AnyStr = Annotated[str | None, BeforeValidator(_str)]
AnyWord = Annotated[str | None, BeforeValidator(_word)]
AnyBool = Annotated[bool | None, BeforeValidator(_bool)]
AnyText = Annotated[str | None, BeforeValidator(as_text)]
AnyDatetime = Annotated[datetime | None, BeforeValidator(_datetime)]


def _items(value: object) -> list[Any]:
    """The entries of an object keyed by id, or of a list; nothing else is a collection of runs or metrics."""
    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, list):
        return value
    return []


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Metric(_Lenient):
    """One evaluation metric of a run."""

    name: AnyStr = None
    eval_type: AnyStr = None
    type: AnyStr = None
    passed: AnyBool = None
    score: AnyFloat = None
    explanation: AnyText = None

    @property
    def failed(self) -> bool:
        """A binary metric that did not pass: ``eval_type: binary`` with ``passed: false``, or the deprecated
        ``type: binary_...`` with ``score`` 0. A numeric, enum or qualitative score of 0 is not a failure."""
        binary = self.eval_type == "binary" or (self.type or "").startswith("binary")
        if not binary:
            return False
        return self.passed is False or (self.passed is None and self.score == 0)


class Run(_Lenient):
    """One conversation of one scenario inside a result."""

    id: AnyInt = None
    scenario: AnyInt = None
    scenario_name: AnyStr = None
    status: AnyWord = None
    success: AnyBool = None
    error_message: AnyText = None
    duration: AnyStr = None
    metrics: list[Metric] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _metrics(cls, data: Any) -> Any:
        # Metrics sit under ``evaluation.metrics``; either level may be missing or of another type.
        if isinstance(data, dict):
            evaluation = data.get("evaluation")
            metrics = evaluation.get("metrics") if isinstance(evaluation, dict) else None
            data = {**data, "metrics": [item for item in _items(metrics) if isinstance(item, dict)]}
        return data

    def failed_metrics(self) -> list[Metric]:
        return [metric for metric in self.metrics if metric.failed]


class Result(_Lenient):
    """A submission (a batch of runs) as Cekura reports it; ``id`` and ``status`` are all it must have."""

    id: Annotated[int, BeforeValidator(_int)]
    status: str
    name: AnyStr = None
    success_rate: AnyFloat = None
    total_runs_count: AnyInt = None
    success_runs_count: AnyInt = None
    failed_runs_count: AnyInt = None
    runs: list[Run] = Field(default_factory=list)
    failed_reasons: Any = None
    created_at: AnyDatetime = None

    @field_validator("runs", mode="before")
    @classmethod
    def _runs(cls, value: object) -> list[Any]:
        # The detail view keys runs by id, the "run started" answer lists them; a run without its own id takes
        # the key it is filed under.
        if isinstance(value, dict):
            return [
                {"id": key, **run} if "id" not in run or run["id"] is None else run
                for key, run in value.items()
                if isinstance(run, dict)
            ]
        return [run for run in _items(value) if isinstance(run, dict)]

    @property
    def terminal(self) -> bool:
        return is_finished(self.status)

    def verdict(self) -> Verdict | None:
        """Passed or failed by the one rule (``scheduler.verdicts``); None while the result is still going."""
        states = [RunState(run.id, run.status, run.success) for run in self.runs]
        return judge(self.status, states, failed_runs_count=self.failed_runs_count)


class ResultSummary(_Lenient):
    """A search hit: only its ``name`` is promised, and an ``id`` is needed to adopt it."""

    id: AnyInt = None
    name: AnyStr = None
    status: AnyWord = None


class ResultPage(_Lenient):
    """One page of ``GET /results/?search=``.

    Unlike everything else here, its ``results`` must be a list of objects: a page that cannot be read is no
    proof that a submission is absent, and taking it for one would send a paid submission twice.
    """

    count: AnyInt = None
    next: AnyStr = None
    results: list[ResultSummary]


__all__ = ["Metric", "Result", "ResultPage", "ResultSummary", "Run", "as_text"]
