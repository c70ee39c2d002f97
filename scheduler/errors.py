"""The one error tree of the scheduler.

SchedulerError                 base; ``permanent`` says whether retrying can help (the retry logic reads it)
├── ConfigError                jobs.toml or the environment is wrong (carries every ConfigIssue)
├── SettingsError              a process setting is missing or invalid (e.g. no API key for ``run``)
├── JobNotFoundError           no job of that name in the config (``trigger``, ``pause``)
├── SlotNotClaimedError        a manual fire whose slot could not be claimed
├── SubmissionUnsettledError   a submission's answer was lost and it cannot be looked up yet: it stays claimed
├── CekuraError                the Cekura API answered with an error or not at all
│   ├── CekuraRejectedError    4xx on a submission: Cekura said no (permanent)
│   │   └── CekuraBalanceError the account's balance cannot pay for the runs (permanent, daemon-level)
│   ├── CekuraAuthError        401/403: the API key is wrong (permanent, daemon-level)
│   ├── CekuraNotFoundError    404: no such result (permanent)
│   ├── CekuraUnavailableError 429/503 or a connect error: the request surely did not take effect
│   ├── CekuraAmbiguousError   the request may have reached Cekura: answer lost, 500/502/504
│   └── CekuraResponseError    Cekura answered 2xx with a body we cannot read
├── AnswerTooLargeError        an answer past the client's size cap (mapped to a CekuraError by the client)
└── StoreError                 the database failed or refused
"""

from __future__ import annotations


class SchedulerError(Exception):
    """Base of every error the scheduler raises on purpose."""

    permanent: bool = False

    def __init__(self, message: str, *, permanent: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if permanent is not None:
            self.permanent = permanent


class ConfigError(SchedulerError):
    """jobs.toml cannot be used; ``issues`` lists every problem found, each with its place."""

    permanent = True

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


def count_errors(issues: list[ConfigIssue]) -> str:
    """``1 error``, ``3 errors``: how many problems a config file has, for a sentence."""
    return f"{len(issues)} error{'' if len(issues) == 1 else 's'}"


class ConfigIssue:
    """One problem in a config file: where it is and what is wrong."""

    def __init__(
        self,
        *,
        path: str,
        message: str,
        line: int | None = None,
        column: int | None = None,
        job: str | None = None,
    ) -> None:
        self.path = path
        self.message = message
        self.line = line
        self.column = column
        self.job = job

    def __str__(self) -> str:
        where = self.path
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        job = f" job {self.job!r}:" if self.job else ""
        return f"{where}:{job} {self.message}"

    def as_dict(self) -> dict[str, object]:
        return {"file": self.path, "line": self.line, "column": self.column, "job": self.job, "message": self.message}


class SettingsError(SchedulerError):
    """A process setting from the environment is missing or invalid."""

    permanent = True


class JobNotFoundError(SchedulerError):
    """No job of this name in the config."""

    permanent = True


class SlotNotClaimedError(SchedulerError):
    """A manual fire could not claim its slot (claimed already, or the database refused)."""

    permanent = True


class SubmissionUnsettledError(SchedulerError):
    """A submission whose answer was lost could not be looked up by name yet; its claim stays for the next sweep."""


class CekuraError(SchedulerError):
    """The Cekura API did not do what was asked."""

    def __init__(self, message: str, *, status_code: int | None = None, permanent: bool | None = None) -> None:
        super().__init__(message, permanent=permanent)
        self.status_code = status_code


class CekuraRejectedError(CekuraError):
    """Cekura refused the request (400, insufficient balance, ...); sending it again will not help."""

    permanent = True


class CekuraBalanceError(CekuraRejectedError):
    """Cekura refused a submission for want of balance: a problem of the whole account, not of one job."""


class CekuraAuthError(CekuraError):
    """Cekura refused the API key (401/403): a problem of the whole daemon, not of one job."""

    permanent = True


class CekuraNotFoundError(CekuraError):
    """Cekura has no such result."""

    permanent = True


class CekuraUnavailableError(CekuraError):
    """The request surely had no effect (connect error, 429, 503); it may be sent again later."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, permanent=False)
        self.retry_after = retry_after


class CekuraAmbiguousError(CekuraError):
    """The request may or may not have taken effect (answer lost, 500/502/504).

    A submission that fails this way must be looked up by name before it is ever sent again.
    """


class CekuraResponseError(CekuraError):
    """Cekura answered with a body that does not have the documented shape."""

    permanent = True


class AnswerTooLargeError(SchedulerError):
    """An answer larger than the client reads; the client turns it into the CekuraError its request calls for."""


class StoreError(SchedulerError):
    """The database could not be read or written."""
