"""Process settings from the environment (and a ``.env`` file): the API key, URLs, paths, logging.

These are read once at start; editing them needs a restart. The API key is a ``SecretStr``: it never reaches a
log line or the database. ``CEKURA_API_KEY_FILE`` names a file holding the key (Docker and Kubernetes secrets).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from scheduler.errors import SettingsError


class Settings(BaseSettings):
    """Everything the process reads from its environment."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True)

    api_key: SecretStr | None = Field(None, validation_alias=AliasChoices("CEKURA_API_KEY", "api_key"))
    api_key_file: Path | None = Field(None, validation_alias=AliasChoices("CEKURA_API_KEY_FILE", "api_key_file"))
    base_url: str = Field("https://api.cekura.ai", validation_alias=AliasChoices("CEKURA_BASE_URL", "base_url"))
    config_path: Path = Field(Path("jobs.toml"), validation_alias=AliasChoices("SCHEDULER_CONFIG", "config_path"))
    database_url: str = Field(
        "sqlite:///scheduler.db", validation_alias=AliasChoices("SCHEDULER_DATABASE_URL", "database_url")
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", validation_alias=AliasChoices("SCHEDULER_LOG_LEVEL", "log_level")
    )
    log_format: Literal["text", "json"] = Field(
        "text", validation_alias=AliasChoices("SCHEDULER_LOG_FORMAT", "log_format")
    )

    http_addr: str = Field("127.0.0.1:8787", validation_alias=AliasChoices("SCHEDULER_HTTP_ADDR", "http_addr"))
    http_token: SecretStr | None = Field(None, validation_alias=AliasChoices("SCHEDULER_HTTP_TOKEN", "http_token"))

    @model_validator(mode="after")
    def _read_key_file(self) -> Settings:
        if self.api_key is None and self.api_key_file is not None:
            try:
                self.api_key = SecretStr(self.api_key_file.read_text(encoding="utf-8").strip())
            except OSError as error:
                raise ValueError(f"CEKURA_API_KEY_FILE {self.api_key_file}: {error.strerror}") from None
        return self

    @property
    def http_host_port(self) -> tuple[str, int]:
        """SCHEDULER_HTTP_ADDR split into host and port."""
        host, _, port = self.http_addr.rpartition(":")
        return host.strip("[]") or "127.0.0.1", int(port)

    @model_validator(mode="after")
    def _token_when_exposed(self) -> Settings:
        try:
            host, _ = self.http_host_port
        except ValueError:
            raise ValueError(f"SCHEDULER_HTTP_ADDR {self.http_addr!r}: use host:port, e.g. 127.0.0.1:8787") from None
        if host not in ("127.0.0.1", "localhost", "::1") and self.http_token is None:
            raise ValueError(
                f"SCHEDULER_HTTP_ADDR {self.http_addr} listens beyond this machine: set SCHEDULER_HTTP_TOKEN too"
            )
        return self

    @property
    def database_url_for_humans(self) -> str:
        """The database URL with its password hidden, for log lines and status output."""
        from sqlalchemy.engine import make_url  # here: `check` loads settings and must start fast

        return make_url(self.database_url).render_as_string(hide_password=True)

    def require_api_key(self) -> SecretStr:
        """The API key, or a SettingsError that tells the user how to provide it."""
        if self.api_key is None or not self.api_key.get_secret_value():
            raise SettingsError(
                "no Cekura API key: set CEKURA_API_KEY (or CEKURA_API_KEY_FILE, or put it in .env); "
                "to try the scheduler without one, run `cekura-scheduler demo`"
            )
        return self.api_key


def load_settings(**overrides: object) -> Settings:
    """Read the settings; a bad value becomes a SettingsError naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}" for item in error.errors())
        raise SettingsError(f"invalid settings: {problems}") from None
