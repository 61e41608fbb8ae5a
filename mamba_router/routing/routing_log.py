"""The routing log: one JSON object per line, appended safely by many threads and processes, rotated by size.

Each record is written with a single ``write`` on a file opened in append mode while an exclusive lock on a sidecar
``.lock`` file is held (``filelock``), so records never interleave or tear, and rotation (``routing.jsonl`` ->
``routing.jsonl.1`` -> ... -> ``.N``, the oldest dropped) never races a writer in another process.

What a record holds is decided by the router: by default lengths and salted hashes of the text, never the text.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import secrets
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from mamba_router.errors import ConfigurationError, MambaRouterError
from mamba_router.paths import user_path

logger = logging.getLogger(__name__)

LOCK_TIMEOUT_S = 30.0
_O_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation
SALT_BYTES = 16


class RoutingLogError(MambaRouterError):
    """The routing log cannot be written or read (permissions, a lock held too long, a full disk)."""


@dataclass(frozen=True)
class LogReadout:
    """Records read back (oldest first) and how many lines could not be parsed."""

    records: list[dict[str, Any]]
    malformed_lines: int
    files: list[Path]


class RoutingLog:
    """A size-bounded JSONL file with rotation; safe to share between threads and processes."""

    def __init__(self, path: str | os.PathLike[str], *, max_bytes: int = 10 * 1024 * 1024, backups: int = 3) -> None:
        if max_bytes < 1024:
            raise ConfigurationError(f"log max_bytes must be at least 1024, got {max_bytes}")
        if backups < 0:
            raise ConfigurationError(f"log backups must be 0 or more, got {backups}")
        self.path = user_path(path, "log path")
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = FileLock(str(self.path) + ".lock", timeout=LOCK_TIMEOUT_S, thread_local=False)
        self._thread_lock = threading.Lock()
        self._salt: bytes | None = None

    def __repr__(self) -> str:
        return f"RoutingLog({str(self.path)!r}, max_bytes={self.max_bytes}, backups={self.backups})"

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record as one line, all or nothing; rotate first when the line would push the file past
        ``max_bytes``.

        A write cut short (a full disk) is rolled back to the file's previous end and raised as
        :class:`RoutingLogError`, so no line is ever left half-written by this method. A file whose last line was
        torn by something else (a crash, another program) gets a newline first, so the new record stays readable.
        """
        line = (json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str) + "\n").encode("utf-8")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._thread_lock, self._lock:
                size = self.path.stat().st_size if self.path.exists() else 0
                if size and size + len(line) > self.max_bytes:
                    self._rotate()
                fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | _O_BINARY, 0o600)
                try:
                    _append_all_or_nothing(fd, line)
                finally:
                    os.close(fd)
        except Timeout as exc:
            raise RoutingLogError(
                f"the routing log {self.path} stayed locked for {LOCK_TIMEOUT_S:.0f} s: {exc}"
            ) from exc
        except OSError as exc:
            raise RoutingLogError(f"cannot write the routing log {self.path}: {exc}") from exc

    def _rotate(self) -> None:
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
            return
        oldest = self._rotated(self.backups)
        oldest.unlink(missing_ok=True)
        for index in range(self.backups - 1, 0, -1):
            source = self._rotated(index)
            if source.exists():
                source.replace(self._rotated(index + 1))
        self.path.replace(self._rotated(1))

    def _rotated(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")

    def files(self) -> list[Path]:
        """The log's files that exist, oldest first."""
        candidates = [self._rotated(i) for i in range(self.backups, 0, -1)] + [self.path]
        return [p for p in candidates if p.exists()]

    def read(self, limit: int | None = None) -> LogReadout:
        """The last ``limit`` records (all when None), oldest first, counting lines that are not log records (not
        JSON, or JSON of another shape: :func:`is_log_record`)."""
        if limit is not None and limit < 0:
            raise ConfigurationError(f"limit must be 0 or more, got {limit}")
        files = self.files()
        records: list[dict[str, Any]] = []
        malformed = 0
        for record in self._iter_newest_first(files):
            if record is None:
                malformed += 1
                continue
            if limit is not None and len(records) >= limit:
                break
            records.append(record)
        records.reverse()
        return LogReadout(records=records, malformed_lines=malformed, files=files)

    def _iter_newest_first(self, files: list[Path]) -> Iterator[dict[str, Any] | None]:
        for path in reversed(files):
            try:
                lines = path.read_bytes().splitlines()
            except OSError as exc:
                raise RoutingLogError(f"cannot read the routing log {path}: {exc}") from exc
            for raw in reversed(lines):
                if not raw.strip():
                    continue
                try:
                    value = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    yield None
                    continue
                yield value if is_log_record(value) else None

    def salted_hash(self, text: str) -> str:
        """A SHA-256 of ``text`` salted with this log's secret salt: equal texts match, the text is not revealed."""
        digest = hashlib.sha256(self._get_salt())
        digest.update(text.encode("utf-8", errors="surrogatepass"))
        return digest.hexdigest()[:32]

    def _get_salt(self) -> bytes:
        if self._salt is None:
            salt_path = self.path.with_name(self.path.name + ".salt")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self._thread_lock, self._lock:
                    if not salt_path.exists():
                        _write_new_file(salt_path, secrets.token_hex(SALT_BYTES).encode("ascii"))
                    salt = salt_path.read_bytes().strip()
            except (OSError, Timeout) as exc:
                raise RoutingLogError(f"cannot create or read the log's hash salt {salt_path}: {exc}") from exc
            if len(salt) != 2 * SALT_BYTES or any(c not in b"0123456789abcdef" for c in salt):
                raise RoutingLogError(
                    f"the log's hash salt {salt_path} is damaged (it must be {2 * SALT_BYTES} hex digits); delete it "
                    "and a new one is made (hashes in older records will then not match new ones)"
                )
            self._salt = salt
        return self._salt


def _write_new_file(path: Path, data: bytes) -> None:
    """Create ``path`` holding all of ``data``, or not at all: written beside it, then renamed into place."""
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _O_BINARY, 0o600)
    try:
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        os.replace(partial, path)
    except OSError:
        partial.unlink(missing_ok=True)
        raise


def _append_all_or_nothing(fd: int, line: bytes) -> None:
    """Append ``line`` to the open file ``fd`` (opened read-write, append mode, under the log's lock) or leave the
    file as it was."""
    start = os.fstat(fd).st_size
    if start:
        os.lseek(fd, start - 1, os.SEEK_SET)
        if os.read(fd, 1) != b"\n":  # a torn last line: start this record on a line of its own
            line = b"\n" + line
    try:
        _write_all(fd, line)
    except OSError:
        if os.fstat(fd).st_size > start:
            os.ftruncate(fd, start)  # roll back the part of the record that was written
        raise


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data``; a write that stops short is an OSError (ENOSPC), never a silent partial write."""
    written = 0
    while written < len(data):
        count = os.write(fd, data[written:])
        if count <= 0:
            raise OSError(errno.ENOSPC, "the write stopped short (no space left on the device?)")
        written += count


TEXT_FIELDS = ("time", "kind", "model_used", "backend", "outcome", "error", "error_type", "fallback_reason")
NUMBER_FIELDS = ("token_count", "pages")


def is_log_record(value: Any) -> bool:
    """True for a JSON object whose known fields have the types the log writes (readers rely on them)."""
    if not isinstance(value, dict):
        return False
    if any(value.get(k) is not None and not isinstance(value[k], str) for k in TEXT_FIELDS):
        return False
    if any(
        value.get(k) is not None and (not isinstance(value[k], (int, float)) or isinstance(value[k], bool))
        for k in NUMBER_FIELDS
    ):
        return False
    if "fallback_used" in value and not isinstance(value["fallback_used"], bool):
        return False
    rules = value.get("rules", [])
    return isinstance(rules, list) and all(isinstance(r, dict) and isinstance(r.get("name"), str) for r in rules)
