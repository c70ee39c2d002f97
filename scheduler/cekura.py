"""The Cekura API client: submit a scenario run, read a result, find a submission by name, end calls.

Results are read from the v2 results endpoints (the v1 ones are deprecated; runs are started under v1, the only
place the run endpoints exist). HTTP outcomes become domain errors (see ``scheduler.errors``), split by what a
caller may do next:
``CekuraUnavailableError`` surely had no effect and may be sent again; ``CekuraAmbiguousError`` may have taken
effect and must be looked up by name first; everything permanent is never retried. Answers are read
tolerantly (``scheduler.results``).
"""

from __future__ import annotations

import json as _json
import logging
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr, ValidationError

from scheduler.config import ENDPOINTS, Job
from scheduler.errors import (
    AnswerTooLargeError,
    CekuraAmbiguousError,
    CekuraAuthError,
    CekuraBalanceError,
    CekuraError,
    CekuraNotFoundError,
    CekuraRejectedError,
    CekuraResponseError,
    CekuraUnavailableError,
)
from scheduler.results import Result, ResultPage, ResultSummary, Run

logger = logging.getLogger(__name__)

RESULTS = "/test_framework/v2/results/"
CRON_JOBS = "/schedules/v1/cron-jobs/"
MAX_ANSWER_BYTES = 10_000_000  # a larger answer is not read (a 50 MB one tripled the daemon's memory)


@dataclass(frozen=True)
class Submission:
    """What the scheduler sends for one fire: the endpoint path segment and the JSON body."""

    endpoint: str
    body: dict[str, Any]


def build_submission(job: Job, name: str) -> Submission:
    """The request body for a job, in the shape its endpoint wants (``agent`` vs ``agent_id``, scenario ids or
    tables, tags, a folder, a spec); ``name`` is sent where the endpoint takes one."""
    endpoint = ENDPOINTS[job.endpoint]
    body: dict[str, Any] = dict(job.body)
    if "name" in endpoint.fields:
        body["name"] = name
    if endpoint.frequency is not None:
        body["frequency"] = job.frequency
    if job.spec is not None:
        body["spec"] = job.spec
    elif job.tags is not None:
        body["tags"] = list(job.tags)
    elif job.folder_path is not None:
        body["folder_path"] = job.folder_path
        body["project_id"] = job.project_id
    elif endpoint.scenario_keys:
        body["scenarios"] = [
            {"scenario": ref.id}
            | {key: getattr(ref, key) for key in endpoint.scenario_keys if getattr(ref, key) is not None}
            for ref in job.scenarios
        ]
    else:
        body["scenarios"] = [ref.id for ref in job.scenarios]
    if job.agent is not None and endpoint.agent_field is not None:
        body[endpoint.agent_field] = job.agent
    if job.assistant_id is not None:
        body["assistant_id"] = job.assistant_id
    return Submission(endpoint=endpoint.path, body=body)


def _message(content: bytes, response: httpx.Response) -> str:
    """Cekura's own words from an error body: ``{"detail": ...}``, a field map or a list."""
    try:
        data = _json.loads(content)
    except ValueError:
        text = content.decode("utf-8", "replace").strip()
        return text[:300] if text else response.reason_phrase
    if isinstance(data, dict):
        if "detail" in data and len(data) == 1:
            return str(data["detail"])
        parts = []
        for key, value in data.items():
            values = value if isinstance(value, list) else [value]
            parts.append(f"{key}: {'; '.join(str(item) for item in values)}")
        return ", ".join(parts)
    if isinstance(data, list):
        return "; ".join(str(item) for item in data)
    return str(data)


async def _read_capped(response: httpx.Response) -> bytes:
    """The body of a streamed answer, refusing one larger than ``MAX_ANSWER_BYTES`` (it is never kept)."""
    too_large = AnswerTooLargeError(f"an answer larger than {MAX_ANSWER_BYTES} bytes")
    try:
        declared = int(response.headers.get("Content-Length", "0"))
    except ValueError:
        declared = 0
    if declared > MAX_ANSWER_BYTES:
        await response.aclose()
        raise too_large
    chunks, size = [], 0
    try:
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                raise too_large
            chunks.append(chunk)
    finally:
        await response.aclose()
    return b"".join(chunks)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class CekuraClient:
    """Talks to the Cekura API over an injected ``httpx.AsyncClient``."""

    def __init__(self, *, http: httpx.AsyncClient, base_url: str, api_key: SecretStr) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._api_key = api_key
        self.base_url = self._base
        self.connect_failures = 0  # in a row: requests that got no answer at all (not connected, cut), reset by any

    async def _request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        json: Any = None,
        params: dict[str, Any] | None = None,
        may_duplicate: bool = False,
    ) -> Any:
        """Send one request; map every failure to a CekuraError subclass.

        ``may_duplicate`` marks a request that creates something: a transport failure after it was sent, or a
        500/502/504, is then ambiguous rather than retryable.
        """
        headers = {"X-CEKURA-API-KEY": self._api_key.get_secret_value(), "Accept": "application/json"}
        url = f"{self._base}{path}"
        try:
            request = self._http.build_request(method, url, json=json, params=params, headers=headers)
            response = await self._http.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
            self.connect_failures += 1
            raise CekuraUnavailableError(f"{what}: cannot connect to Cekura ({type(error).__name__})") from error
        except httpx.TransportError as error:
            self.connect_failures += 1
            message = f"{what}: the answer was lost ({type(error).__name__}: {error or 'no detail'})"
            if may_duplicate:
                raise CekuraAmbiguousError(message) from error
            raise CekuraUnavailableError(message) from error
        self.connect_failures = 0
        try:
            content = await _read_capped(response)
        except httpx.TransportError as error:
            message = f"{what}: the answer was lost while it was read ({type(error).__name__})"
            if may_duplicate:
                raise CekuraAmbiguousError(message) from error
            raise CekuraUnavailableError(message) from error
        except AnswerTooLargeError:
            message = f"{what}: Cekura's answer is larger than {MAX_ANSWER_BYTES // 1_000_000} MB; it was not read"
            if may_duplicate:
                raise CekuraAmbiguousError(message, status_code=response.status_code) from None
            raise CekuraUnavailableError(message, status_code=response.status_code) from None
        status = response.status_code
        if status < 400:
            if not content.strip():
                return None
            try:
                return _json.loads(content)
            except ValueError:
                raise CekuraResponseError(
                    f"{what}: Cekura answered {status} with a body that is not JSON", status_code=status
                ) from None
        said = _message(content, response).replace(self._api_key.get_secret_value(), "***")  # some servers echo the key
        message = f"{what}: Cekura answered {status}: {said}"
        if status in (401, 403):
            raise CekuraAuthError(message, status_code=status)
        if status == 404:
            raise CekuraNotFoundError(message, status_code=status)
        if status in (429, 503):
            raise CekuraUnavailableError(message, status_code=status, retry_after=_retry_after(response))
        if status == 408 or status >= 500:
            if may_duplicate:
                raise CekuraAmbiguousError(message, status_code=status)
            raise CekuraUnavailableError(message, status_code=status, retry_after=_retry_after(response))
        if status == 402 or "balance" in said.lower():  # the document gives no status code for it
            raise CekuraBalanceError(message, status_code=status)
        raise CekuraRejectedError(message, status_code=status)

    async def submit(self, submission: Submission) -> Result:
        """Start a scenario run; one call, never retried here (a POST is not idempotent)."""
        name = submission.body.get("name")
        data = await self._request(
            "POST",
            f"/test_framework/v1/scenarios/{submission.endpoint}/",
            json=submission.body,
            what=f"submitting {name}",
            may_duplicate=True,
        )
        if isinstance(data, dict) and not isinstance(data.get("status"), str):
            data = {**data, "status": "pending"}  # a run that has just been started; its id is what matters
        return self._result(data, f"the answer to submission {name}")

    async def get_result(self, result_id: int) -> Result:
        """Read a result with its runs."""
        data = await self._request("GET", f"{RESULTS}{result_id}/", what=f"reading result {result_id}")
        return self._result(data, f"result {result_id}")

    async def find_by_name(self, name: str) -> list[ResultSummary]:
        """Every result whose name is exactly ``name`` (Cekura's search matches substrings), newest first.

        A hit with that name but no id cannot be adopted and is no proof of absence either: it is an error.
        """
        found: list[ResultSummary] = []
        page = 1
        while True:
            data = await self._request(
                "GET",
                RESULTS,
                params={"search": name, "page": page, "page_size": 50},
                what=f"searching results named {name}",
            )
            try:
                parsed = ResultPage.model_validate(data)
            except ValidationError:
                raise CekuraResponseError(f"searching results named {name}: unreadable page of results") from None
            hits = [hit for hit in parsed.results if hit.name == name]
            if any(hit.id is None for hit in hits):
                raise CekuraResponseError(f"searching results named {name}: a result of that name has no id")
            found.extend(hits)
            if not parsed.next or page >= 20:
                return found
            page += 1

    def secrets(self) -> list[str]:
        """What this client must never let out: the API key (registered for redaction)."""
        return [self._api_key.get_secret_value()]

    async def check_key(self) -> None:
        """One cheap authenticated read: raises CekuraAuthError for a refused key, CekuraUnavailableError when
        Cekura cannot be reached, and returns when Cekura answers and accepts the key."""
        await self._request("GET", RESULTS, params={"page": 1, "page_size": 1}, what="checking the API key")

    async def cron_jobs(self, *, agent_id: int | None = None, project_id: int | None = None) -> list[Any]:
        """Cekura's own scheduled jobs (``/schedules/v1/cron-jobs/``): a list, or a page's ``results``."""
        params = {key: str(value) for key, value in (("agent_id", agent_id), ("project_id", project_id)) if value}
        data = await self._request("GET", CRON_JOBS, params=params, what="listing Cekura's cron jobs")
        if isinstance(data, dict) and isinstance(data.get("results"), list):
            data = data["results"]  # paginated, as Cekura's lists may be
        if not isinstance(data, list):
            raise CekuraResponseError("listing Cekura's cron jobs: the answer is not a list")
        return data

    async def end_calls(self, result_id: int) -> None:
        """Stop the calls of a result (Cekura has no other way to cancel)."""
        await self._request("POST", f"{RESULTS}{result_id}/end_calls/", what=f"ending the calls of result {result_id}")

    @staticmethod
    def _result(data: Any, what: str) -> Result:
        try:
            return Result.model_validate(data)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in item['loc']) or 'body'}: {item['msg']}" for item in error.errors()
            )
            raise CekuraResponseError(f"{what} does not have the documented shape: {problems}") from None


__all__ = [
    "CekuraClient",
    "CekuraError",
    "Result",
    "ResultSummary",
    "Run",
    "Submission",
    "build_submission",
]
