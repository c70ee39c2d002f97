"""A local server speaking the subset of the Cekura API the scheduler uses, for demos and tests.

Every answer validates against the response schema of its operation in Cekura's OpenAPI document
(`tests/unit/test_simulator_schema.py` holds it to that). It serves every run endpoint of
``scheduler.endpoints`` under `/test_framework/v1/scenarios/` (bodies checked as Cekura does, against the same
descriptions `validate` uses; scenarios chosen by tag or folder come from the `tags` and `folders` knobs), the
results endpoints (list and search, detail, `end_calls`) under both `/test_framework/v1/results/` and
`/test_framework/v2/results/`, and Cekura's cron jobs (`/schedules/v1/cron-jobs/`, from the `cron_jobs` knob).

What happens to a result is decided when it is submitted, from the config of that moment: each run draws the
next outcome of its scenario's `behaviours` cycle, and the result walks through `phases` spread evenly over
`run_duration` on the injected clock, then ends. Outcomes: `pass` and `fail` (run `completed`, `success` true or
false, a binary metric that passed or failed), `error` (run `failed`, `success` false, an `error_message`),
`hang` (run `running` forever, until `end_calls`), `timeout` and `cancelled` (the run ends so, with no `success`
key), `unjudged` (run `completed` with no `success` key) and `null` (run `completed` with `"success": null`).
A result whose runs include an `error` ends `failed`, one with a `hang` stays `running`, any other ends
`completed`; `result_status`, when set, replaces the status of every result once it has ended (`end_calls`
included), while its runs keep theirs. `phases` and `result_status` together give each of the ten statuses.

How answers are shaped applies to every following answer: `failed_reasons` (`dict`, `list`, `string` or
`null`), `metric_form` (`eval_type`: binary metrics with `eval_type` and `passed`; `score`: the deprecated
`type: binary_workflow_adherence` with `score` 5 or 0) and `sparse_search` (search hits with only `id`, `name`
and id-less run summaries). Every completed run also carries a numeric metric scoring 0, which is not a failure.
The detail's `success_rate` is a percentage, the list's a fraction (0..1); both are 0 until the result ends.
Pipecat submissions name no agent: their results show agent 1.

Faults (429, 500, dropped connections) are drawn from a seeded RNG so a demo or a test can be replayed exactly.
The `/_simulator/` endpoints need no key: `GET submissions` (every submission and its answer), `GET end_calls`
(the result ids `end_calls` was called on), `POST config` (a JSON patch of `SimulatorConfig`), `GET health`.

One module per role: `config` (the behaviour knobs), `validation` (a submission's body checked as the API does),
`results` (the state: submissions, results and runs on their timeline), `views` (how a result is shown) and
`server` (the aiohttp application, its handlers, and running it).
"""

from scheduler.simulator.config import (
    FAILED_REASONS,
    METRIC_FORMS,
    OUTCOMES,
    PHASES,
    TERMINAL,
    Json,
    SimulatorConfig,
)
from scheduler.simulator.results import Submission
from scheduler.simulator.server import Clock, Simulator, running_simulator, serve
from scheduler.simulator.validation import PIPECAT_AGENT

__all__ = [
    "FAILED_REASONS",
    "METRIC_FORMS",
    "OUTCOMES",
    "PHASES",
    "PIPECAT_AGENT",
    "TERMINAL",
    "Clock",
    "Json",
    "Simulator",
    "SimulatorConfig",
    "Submission",
    "running_simulator",
    "serve",
]
