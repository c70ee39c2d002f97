"""The jobs.toml a daemon runs from: watched for edits, and loaded only once a version is finished."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

from scheduler.config.models import Config
from scheduler.config.parsing import decode, digest, parse_config, read_file
from scheduler.errors import ConfigError, ConfigIssue

_LOOK_AGAIN = (-1, -1, -1)  # a file status no file has


class ConfigSource:
    """The jobs.toml a daemon runs from, watched for edits, and loaded only once a version is finished.

    It polls the file's status once a second rather than subscribing to file-system events: a stat of the path
    follows symlinks and sees a new inode, so editors' rename-on-save, atomic writes, in-place writes, Docker
    bind mounts and Kubernetes ConfigMap symlink swaps are all noticed, including on file systems where inotify
    is silent (network and some container mounts).

    An in-place write (``cp``, ``cat >``) is seen half done: empty, or cut in the middle. So ``load`` reads the
    file twice, ``settle`` seconds apart, and takes a version only when both reads agree byte for byte (parsing
    the first read meanwhile, so a big file costs no more than the settle time). A file still changing after
    ``max_reads`` reads is reported as a ConfigError. The wait goes through ``sleep`` and ``clock`` (seconds,
    monotonic), which tests replace.
    """

    def __init__(
        self,
        path: Path,
        *,
        env: Mapping[str, str],
        settle: float = 0.5,
        max_reads: int = 10,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_reads < 2:
            raise ValueError("max_reads must be at least 2: a version is taken when two reads agree")
        self.path = path
        self.env = env
        self.settle = settle
        self.max_reads = max_reads
        self._sleep = sleep
        self._clock = clock
        self._seen: tuple[int, int, int] | None = self._status()
        self._loaded: Config | None = None  # the last valid version, whose unchanged jobs the next load reuses
        self.last_digest: str | None = None
        """The fingerprint of the version the last ``load`` settled on, valid or not (None: unreadable)."""

    def _status(self) -> tuple[int, int, int] | None:
        try:
            status = self.path.stat()
        except (OSError, ValueError):
            return None
        return (status.st_ino, status.st_mtime_ns, status.st_size)

    def changed(self) -> bool:
        """Whether the file looks different since the last call (or since it was last loaded); cheap, no read."""
        status = self._status()
        if status == self._seen:
            return False
        self._seen = status
        return True

    def load(self) -> Config:
        """Read the file until two reads ``settle`` seconds apart agree, then validate that version.

        Blocks for at least the settle time (run it in a thread). Raises ConfigError listing every problem, and
        nothing else.
        """
        status, data = self._status(), self._take()
        read_at = self._clock()
        for _ in range(self.max_reads - 1):
            outcome = self._parse(data)
            remaining = read_at + self.settle - self._clock()
            if remaining > 0:
                self._sleep(remaining)
            status_again, again = self._status(), self._take()
            read_at = self._clock()
            if again == data or (isinstance(again, ConfigError) and str(again) == str(data)):
                # The status before the first of the two reads: a write after it is noticed by changed().
                self._seen = status
                self.last_digest = digest(data) if isinstance(data, bytes) else None
                if isinstance(outcome, ConfigError):
                    raise outcome
                self._loaded = outcome
                return outcome
            status, data = status_again, again
        self._seen = _LOOK_AGAIN  # the writer may have finished just after the last read: retry at the next poll
        self.last_digest = digest(data) if isinstance(data, bytes) else None
        message = (
            f"the file is still being written: it changed between each of {self.max_reads} reads "
            f"{self.settle:g} s apart (it is read again in a moment)"
        )
        raise ConfigError([ConfigIssue(path=str(self.path), message=message)])

    def _take(self) -> bytes | ConfigError:
        try:
            return read_file(self.path)
        except ConfigError as error:
            return error

    def _parse(self, data: bytes | ConfigError) -> Config | ConfigError:
        if isinstance(data, ConfigError):
            return data
        try:
            return parse_config(decode(data, self.path), path=self.path, env=self.env, previous=self._loaded)
        except ConfigError as error:
            return error

    def current_digest(self) -> str | None:
        """The fingerprint of the file as it is now (None when it cannot be read)."""
        data = self._take()
        return digest(data) if isinstance(data, bytes) else None
