"""The verdict of a fire: passed or failed, decided from what Cekura said, with a reason a person understands.

The rule (README, "How a verdict is decided"): a fire passes only when its result is ``completed``, it has at least
one run, and every run ended ``completed`` with ``success: true``. Anything else fails, and the reason names what
went wrong ("run 55501 ended timeout", "run 55502 has no verdict", "the result has no runs", "3 of 4 runs
failed: ..."). A result still ``pending, in_queue, scaling_up, running, in_progress`` or ``evaluating`` has no
verdict yet. The same rule judges a result as Cekura sends it and a fire as the database keeps it, so an alert
and the outcome it reports always agree. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

PASSED, FAILED = "passed", "failed"

# Cekura's status list, shared by results and runs (status_enum in its API document).
RUNNING_STATUSES = frozenset({"pending", "in_queue", "scaling_up", "running", "in_progress", "evaluating"})
TERMINAL_STATUSES = frozenset({"completed", "failed", "timeout", "cancelled"})

# How the reason of a fire that the scheduler gave up on begins (result_timeout), as opposed to one Cekura ended.
TIMED_OUT = "the result did not finish within result_timeout"

_LISTED = 5  # run problems spelled out in one reason; the rest are counted


class RunState(NamedTuple):
    """What the verdict needs to know of one run."""

    id: int | None
    status: str | None
    success: bool | None


@dataclass(frozen=True)
class Verdict:
    """The outcome of a finished result, with why it failed."""

    outcome: str
    headline: str | None = None  # short, for an alert's title: "3 of 4 runs failed"
    problems: tuple[str, ...] = ()  # one sentence per run that did not pass
    failed_run_ids: tuple[int | None, ...] = ()

    @property
    def passed(self) -> bool:
        return self.outcome == PASSED

    @property
    def reason(self) -> str | None:
        """The whole reason in one line: the headline and the runs that did not pass."""
        if self.headline is None:
            return None
        if not self.problems or self.problems == (self.headline,):
            return self.headline
        listed = "; ".join(self.problems[:_LISTED])
        more = f"; and {len(self.problems) - _LISTED} more" if len(self.problems) > _LISTED else ""
        return f"{self.headline}: {listed}{more}"


def is_finished(status: str | None) -> bool:
    """Whether a result (or run) with this status has ended; unknown statuses are not taken as an end."""
    return status in TERMINAL_STATUSES


def run_problem(run: RunState) -> str | None:
    """Why this run did not pass, or None when it ended ``completed`` with ``success: true``."""
    who = f"run {run.id}" if run.id is not None else "a run without an id"
    if run.status == "completed":
        if run.success is True:
            return None
        return f"{who} failed" if run.success is False else f"{who} has no verdict"
    if run.status is None:
        return f"{who} has no status"
    if run.status in TERMINAL_STATUSES:
        return f"{who} ended {run.status}"
    if run.status in RUNNING_STATUSES:
        return f"{who} is still {run.status}"
    return f"{who} has the unknown status {run.status!r}"


def judge(status: str | None, runs: Sequence[RunState], *, failed_runs_count: int | None = None) -> Verdict | None:
    """The verdict of a result with this status and these runs; None while it is still going."""
    if not is_finished(status):
        return None
    failing = [(run, problem) for run in runs if (problem := run_problem(run)) is not None]
    problems = tuple(problem for _, problem in failing)
    ids = tuple(run.id for run, _ in failing)
    if status != "completed":
        return Verdict(FAILED, f"the result ended {status}", problems, ids)
    if not runs:
        return Verdict(FAILED, "the result has no runs")
    if failing:
        headline = problems[0] if len(runs) == 1 else f"{len(failing)} of {len(runs)} runs failed"
        return Verdict(FAILED, headline, problems, ids)
    if failed_runs_count:
        # Every run listed passed, yet Cekura counts failures (its own CI client goes by this count).
        return Verdict(FAILED, f"Cekura counts {failed_runs_count} failed runs, though every listed run passed")
    return Verdict(PASSED)


def failure_analysis(failed_reasons: object) -> list[str]:
    """Cekura's ``failed_reasons`` (any JSON: an object with ``issues``, a list, a string) as sentences."""
    if failed_reasons is None:
        return []
    if isinstance(failed_reasons, str):
        return [failed_reasons] if failed_reasons.strip() else []
    if isinstance(failed_reasons, dict):
        if "issues" in failed_reasons:
            return failure_analysis(failed_reasons["issues"])
        description = failed_reasons.get("description")
        return [str(description)] if description else []
    if isinstance(failed_reasons, list):
        return [sentence for item in failed_reasons for sentence in _issue(item)]
    return []


def _issue(item: object) -> Iterable[str]:
    if isinstance(item, str):
        return [item] if item.strip() else []
    if isinstance(item, dict) and item.get("description"):
        return [str(item["description"])]
    return []


__all__ = [
    "FAILED",
    "PASSED",
    "RUNNING_STATUSES",
    "TERMINAL_STATUSES",
    "TIMED_OUT",
    "RunState",
    "Verdict",
    "failure_analysis",
    "is_finished",
    "judge",
    "run_problem",
]
