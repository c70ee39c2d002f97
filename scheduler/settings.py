"""Process settings from the environment (and a ``.env`` file): the API key, URLs, paths, logging.

These are read once at start; editing them needs a restart. The API key is a ``SecretStr``: it never reaches a
log line or the database. Each secret can be given as a file instead, the way Docker and Kubernetes mount secrets:
``CEKURA_API_KEY_FILE``, ``CEKURA_WEBHOOK_SECRET_FILE``, ``SCHEDULER_HTTP_TOKEN_FILE`` and
``SCHEDULER_DATABASE_URL_FILE`` (whose URL holds the database password) name a file read when the variable itself
is not set.

Every value is checked here, so that a mistake stops the process at start with one line naming the variable
rather than a traceback later (or, worse, a daemon that runs and does nothing). The database URL is checked as
far as it can be without connecting: it parses, its backend is one the scheduler supports, its driver is
installed and synchronous, and a SQLite file's folder can exist.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, PrivateAttr, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from scheduler.errors import SettingsError

_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_SECRETS = ("api_key", "http_token", "webhook_secret")
# Each setting that may be read from a file, and the field naming that file.
_FILES = {
    "api_key": "api_key_file",
    "database_url": "database_url_file",
    "http_token": "http_token_file",
    "webhook_secret": "webhook_secret_file",
}
_PASSWORD_IN_URL = re.compile(r"(://[^:/@]*:)[^@]*@")
_DATABASE_EXAMPLES = "e.g. sqlite:///scheduler.db or postgresql+psycopg://user:password@host/db"


def _from_env(default: Any, variable: str, about: str) -> Any:
    """A setting read from ``variable`` (or given by its field name, e.g. ``Settings(api_key=...)``)."""
    return Field(default, validation_alias=AliasChoices(variable), description=about)


class Settings(BaseSettings):
    """Everything the process reads from its environment."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True)

    api_key: SecretStr | None = _from_env(
        None,
        "CEKURA_API_KEY",
        "the Cekura API key (required by run and trigger)",
    )
    api_key_file: Path | None = _from_env(
        None,
        "CEKURA_API_KEY_FILE",
        "a file holding the key, when CEKURA_API_KEY is not set",
    )
    base_url: str = _from_env(
        "https://api.cekura.ai",
        "CEKURA_BASE_URL",
        "the Cekura API",
    )
    config_path: Path = _from_env(
        Path("jobs.toml"),
        "SCHEDULER_CONFIG",
        "the jobs file (or --config PATH)",
    )
    database_url: str = _from_env(
        "sqlite:///scheduler.db",
        "SCHEDULER_DATABASE_URL",
        "the database, a SQLAlchemy URL (or --database URL)",
    )
    database_url_file: Path | None = _from_env(
        None,
        "SCHEDULER_DATABASE_URL_FILE",
        "a file holding the database URL, when SCHEDULER_DATABASE_URL is not set",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = _from_env(
        "INFO",
        "SCHEDULER_LOG_LEVEL",
        "DEBUG, INFO, WARNING or ERROR",
    )
    log_format: Literal["text", "json"] = _from_env(
        "text",
        "SCHEDULER_LOG_FORMAT",
        "text or json",
    )

    http_addr: str = _from_env(
        "127.0.0.1:8787",
        "SCHEDULER_HTTP_ADDR",
        "host:port of the status page, API, metrics and /healthz",
    )
    http_token: SecretStr | None = _from_env(
        None,
        "SCHEDULER_HTTP_TOKEN",
        "the token every endpoint but /healthz requires; needed to listen beyond loopback",
    )
    http_token_file: Path | None = _from_env(
        None,
        "SCHEDULER_HTTP_TOKEN_FILE",
        "a file holding the token, when SCHEDULER_HTTP_TOKEN is not set",
    )
    webhook_secret: SecretStr | None = _from_env(
        None,
        "CEKURA_WEBHOOK_SECRET",
        "the secret of the Cekura project's webhook: results are then pushed to "
        "POST /webhooks/cekura and polling is only the fallback",
    )
    webhook_secret_file: Path | None = _from_env(
        None,
        "CEKURA_WEBHOOK_SECRET_FILE",
        "a file holding the webhook's secret, when CEKURA_WEBHOOK_SECRET is not set",
    )
    # A reverse proxy is in front: its X-Forwarded-* headers say which host the client asked for.
    http_trust_forwarded: bool = _from_env(
        False,
        "SCHEDULER_HTTP_TRUST_FORWARDED",
        "true behind a reverse proxy: believe its X-Forwarded-* headers",
    )
    _from_files: set[str] = PrivateAttr(default_factory=set)  # the fields read from a ..._FILE

    @field_validator("webhook_secret")
    @classmethod
    def _not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("empty: set the secret of the Cekura project's webhook, or leave the variable unset")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_case(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_case(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        shown = repr(_PASSWORD_IN_URL.sub(r"\1***@", value))
        if any(character.isspace() for character in value):
            raise ValueError(f"{shown}: a URL has no spaces, e.g. https://api.cekura.ai")
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError when the port is not a number in range
        except ValueError:
            raise ValueError(f"{shown}: not a URL with a valid port, e.g. https://api.cekura.ai") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{shown}: use an http(s) URL with a host, e.g. https://api.cekura.ai")
        return value

    @field_validator("http_addr")
    @classmethod
    def _host_port(cls, value: str) -> str:
        _, colon, port = value.strip().rpartition(":")
        if not colon or not port.isdecimal():
            raise ValueError(f"{value!r}: use host:port with a numeric port, e.g. 127.0.0.1:8787")
        if int(port) > 65535:
            raise ValueError(f"{value!r}: the port must be 0..65535 (0 picks a free one)")
        return value.strip()

    @model_validator(mode="after")
    def _read_files(self) -> Settings:
        """Each setting given as a file (``..._FILE``) and not by its own variable: the file's text, trimmed."""
        for field, file_field in _FILES.items():
            path = getattr(self, file_field)
            if path is None or field in self.model_fields_set:  # the variable itself (or an option) wins
                continue
            named = f"{_variables()[file_field][1]} {str(path)!r}"
            try:
                text = path.read_text(encoding="utf-8").strip()
            except OSError as error:
                raise ValueError(f"{named}: {error.strerror}") from None
            except UnicodeDecodeError:
                raise ValueError(f"{named}: not UTF-8 text") from None
            if not text:
                raise ValueError(f"{named}: the file is empty")
            setattr(self, field, SecretStr(text) if field in _SECRETS else text)
            self._from_files.add(field)
        return self

    @property
    def database_url_variable(self) -> str:
        """What the database URL's errors call it: the variable it came from, or the file."""
        return "SCHEDULER_DATABASE_URL_FILE" if "database_url" in self._from_files else "SCHEDULER_DATABASE_URL"

    @property
    def http_host_port(self) -> tuple[str, int]:
        """SCHEDULER_HTTP_ADDR split into host and port."""
        host, _, port = self.http_addr.rpartition(":")
        return host.strip("[]") or "127.0.0.1", int(port)

    @model_validator(mode="after")
    def _token_when_exposed(self) -> Settings:
        host, _ = self.http_host_port
        if host not in _LOOPBACK and self.http_token is None:
            raise ValueError(
                f"SCHEDULER_HTTP_ADDR {self.http_addr} listens beyond this machine: set SCHEDULER_HTTP_TOKEN too"
            )
        return self

    @property
    def database_url_for_humans(self) -> str:
        """The database URL with its password hidden, for log lines and status output."""
        return hide_password(self.database_url)

    def require_api_key(self) -> SecretStr:
        """The API key, or a SettingsError that tells the user how to provide it."""
        if self.api_key is None or not self.api_key.get_secret_value():
            raise SettingsError(
                "no Cekura API key: set CEKURA_API_KEY (or CEKURA_API_KEY_FILE, or put it in .env); "
                "to try the scheduler without one, run `cekura-scheduler demo`"
            )
        return self.api_key


def hide_password(url: str) -> str:
    """A database URL with its password replaced by ``***``, even when it does not parse."""
    from sqlalchemy.engine import make_url  # here: `check` loads settings and must start fast
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return _PASSWORD_IN_URL.sub(r"\1***@", url)


def database_url_problem(url: str) -> str | None:
    """What is wrong with a SQLAlchemy database URL, as far as can be told without connecting; None if nothing.

    Imports SQLAlchemy (and the URL's driver), so it is kept out of the settings model: `check` must start fast.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return f"not a database URL ({_DATABASE_EXAMPLES})"
    except ValueError:  # SQLAlchemy reads the port with int()
        return f"its port is not a number ({_DATABASE_EXAMPLES})"
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        return f"{backend!r} is not supported: use SQLite or PostgreSQL ({_DATABASE_EXAMPLES})"
    try:
        dialect = parsed.get_dialect()
    except ArgumentError:  # NoSuchModuleError: no such driver for this backend
        return f"no driver {parsed.get_driver_name()!r} for {backend} ({_DATABASE_EXAMPLES})"
    suggestion = "sqlite:///path.db" if backend == "sqlite" else "postgresql+psycopg://"
    if dialect.is_async:
        return f"{parsed.drivername} is an asyncio driver; the scheduler needs a synchronous one: use {suggestion}"
    try:
        dialect.import_dbapi()
    except ImportError as error:
        install = " (pip install 'cekura-scheduler[postgres]')" if backend == "postgresql" else ""
        return (
            f"the {backend} driver {dialect.driver!r} is not installed (no module {error.name or '?'!r}): "
            f"use {suggestion}{install}"
        )
    if backend == "postgresql":
        if not parsed.host and not parsed.database and "host" not in parsed.query:
            return "names neither a host nor a database, e.g. postgresql+psycopg://user:password@host/db"
        return None
    return _sqlite_file_problem(parsed.database, uri=str(parsed.query.get("uri", "")).lower() in ("true", "1"))


def _sqlite_file_problem(database: str | None, *, uri: bool) -> str | None:
    """Whether the SQLite file can be there: its folder is made at start, so only a file in the way stops it."""
    if not database or database == ":memory:" or uri:
        return None
    path = Path(database).expanduser()
    try:
        if path.is_dir():
            return f"{path} is a folder, not a database file"
        for folder in path.parents:
            if folder.exists():
                return None if folder.is_dir() else f"{folder} is a file, so {path} cannot be created under it"
    except OSError:  # e.g. no permission to look: connecting will say what is wrong
        return None
    return None


def _variables() -> dict[str, tuple[str, str]]:
    """Each setting's field name and environment variable, by either: what pydantic puts in an error's place."""
    names: dict[str, tuple[str, str]] = {}
    for field, info in Settings.model_fields.items():
        alias = info.validation_alias
        variable = str(alias.choices[0]) if isinstance(alias, AliasChoices) else field.upper()
        names[field] = names[variable] = (field, variable)
    return names


def _describe(item: Any) -> str:
    """One problem of a ValidationError, naming the environment variable (never a secret's value)."""
    message = str(item["ctx"]["error"]) if item["type"] == "value_error" else str(item["msg"])
    named = _variables().get(str(item["loc"][0])) if item["loc"] else None
    if named is None:
        return message  # a check of several settings: its message names them
    field, variable = named
    if item["type"] == "value_error":
        return f"{variable} {message}"
    if field in _SECRETS:
        return f"{variable}: {message}"
    return f"{variable} {item['input']!r}: {message}"


def environment_variables() -> list[tuple[str, str]]:
    """Each environment variable the settings read, with what it is and its default: for ``--help``."""
    rows = []
    for field, info in Settings.model_fields.items():
        _, variable = _variables()[field]
        default = info.default
        shown = str(default).lower() if isinstance(default, bool) else default
        rows.append((variable, f"{info.description}" + (f" [default: {shown}]" if default is not None else "")))
    return rows


def load_settings(*, check_database: bool = True, database_named: str | None = None, **overrides: object) -> Settings:
    """Read the settings; a bad value becomes a one-line SettingsError naming its variable.

    ``check_database`` also checks SCHEDULER_DATABASE_URL, which imports SQLAlchemy: the health probe skips it.
    ``database_named`` is what its errors call it (``--database`` when the URL came from that option; by default
    the variable, or the file, it came from).
    """
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        raise SettingsError("; ".join(_describe(item) for item in error.errors())) from None
    if check_database and (problem := database_url_problem(settings.database_url)):
        named = database_named or settings.database_url_variable
        raise SettingsError(f"{named} {settings.database_url_for_humans}: {problem}")
    return settings
