"""The local spool: raw records that could not reach the database, kept in files until they do.

A worker that exits while the database is down or hung, or whose buffer
fills during an outage, spills its records here instead of dropping them;
any writer thread (of any worker, later) reads the files back and writes
them. Rows are inserted with ON CONFLICT DO NOTHING on request_id, so a
file written twice (a batch that committed while its writer gave up on it)
still yields one row per request.

Layout: FIB_LOG_SPOOL_DIR/<database>/, one subdirectory per database the
records wait for (so two services sharing the directory never write into
each other's table). Each file holds one JSON array of raw records per
line, is written under a temporary name, fsynced and renamed (readers never
see half a file), and is deleted once its rows are committed. A reader holds
flock on the file while writing it, so two workers never write the same file.
The directory is bounded by FIB_LOG_SPOOL_MAX_BYTES: what does not fit is
dropped and counted.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS

from .rows import RawRecord

SUFFIX = ".jsonl"
_TEMPORARY_PREFIX = ".incoming-"
# A temporary file this old belongs to a spill that died half-way.
_STALE_TEMPORARY_SECONDS = 3600.0


def database_key(alias: str = DEFAULT_DB_ALIAS) -> str:
    """A directory name for the database `alias` points at: vendor, name and a short hash."""
    params = settings.DATABASES[alias]
    identity = "|".join(
        str(params.get(key, "")) for key in ("ENGINE", "HOST", "PORT", "NAME", "USER")
    )
    name = Path(str(params.get("NAME", "db"))).name or "db"
    safe = "".join(char if char.isalnum() or char in "-_" else "_" for char in name)[:40]
    return f"{safe}-{hashlib.sha256(identity.encode()).hexdigest()[:12]}"


@dataclass(frozen=True, slots=True)
class SpillResult:
    """What one spill did: records written to files, and records dropped (the spool was full)."""

    spilled: int
    dropped: int


class RequestLogSpool:
    """A bounded directory of files of raw records waiting for the database."""

    def __init__(self, *, directory: Path, max_bytes: int, records_per_file: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.records_per_file = max(1, records_per_file)
        self._sequence = 0

    @classmethod
    def from_settings(cls) -> RequestLogSpool:
        """The spool of the default database, configured by FIB_LOG_SPOOL_*."""
        return cls(
            directory=Path(settings.FIB_LOG_SPOOL_DIR) / database_key(),
            max_bytes=settings.FIB_LOG_SPOOL_MAX_BYTES,
            records_per_file=settings.FIB_LOG_BATCH_SIZE,
        )

    def _files(self) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(self.directory) as entries:
                return [entry for entry in entries if entry.is_file()]
        except FileNotFoundError:
            return []

    def size_bytes(self) -> int:
        """Bytes the spool holds now (complete files and spills under way)."""
        total = 0
        for entry in self._files():
            with contextlib.suppress(FileNotFoundError):  # written and deleted meanwhile
                total += entry.stat().st_size
        return total

    def stats(self) -> dict[str, int]:
        """Files waiting and their bytes, for /readyz."""
        files = [entry for entry in self._files() if entry.name.endswith(SUFFIX)]
        return {"spool_files": len(files), "spool_bytes": self.size_bytes()}

    def spill(self, records: Sequence[RawRecord]) -> SpillResult:
        """Write records to new files, as many as fit under max_bytes; never raises OSError."""
        if not records:
            return SpillResult(0, 0)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            room = self.max_bytes - self.size_bytes()
        except OSError:
            return SpillResult(0, len(records))
        spilled = 0
        for start in range(0, len(records), self.records_per_file):
            chunk = records[start : start + self.records_per_file]
            lines = [json.dumps(record, separators=(",", ":")) + "\n" for record in chunk]
            fitting = []
            for line in lines:
                room -= len(line.encode())
                if room < 0:
                    break
                fitting.append(line)
            if fitting and self._write_file("".join(fitting)):
                spilled += len(fitting)
            if len(fitting) < len(lines):
                break
        return SpillResult(spilled, len(records) - spilled)

    def _write_file(self, text: str) -> bool:
        self._sequence += 1
        # Sortable by time, unique across the processes sharing the directory.
        name = f"{time.time_ns():020d}-{os.getpid()}-{self._sequence:06d}{SUFFIX}"
        temporary = self.directory / f"{_TEMPORARY_PREFIX}{name}"
        try:
            # Owner-only: the records hold client addresses.
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with open(descriptor, "w", encoding="utf-8") as file:
                file.write(text)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.directory / name)
        except OSError:
            temporary.unlink(missing_ok=True)
            return False
        return True

    def drain(self, write: Callable[[list[RawRecord]], None], *, max_files: int) -> int:
        """Hand up to max_files spooled files to write(), oldest first; return records written.

        A file is deleted only after write() returned; when write() raises, the
        file stays for a later attempt and the exception propagates.
        """
        entries = sorted(
            (entry for entry in self._files() if entry.name.endswith(SUFFIX)),
            key=lambda entry: entry.name,
        )
        self._remove_stale_temporaries()
        written = 0
        for entry in entries[:max_files]:
            written += self._drain_file(Path(entry.path), write)
        return written

    def _drain_file(self, path: Path, write: Callable[[list[RawRecord]], None]) -> int:
        try:
            file = open(path, encoding="utf-8")  # noqa: SIM115 - held open across the lock
        except FileNotFoundError:
            return 0  # another worker wrote it meanwhile
        with file:
            try:
                fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # another worker is writing it
            try:
                if os.stat(path).st_ino != os.fstat(file.fileno()).st_ino:
                    return 0
            except FileNotFoundError:
                return 0  # written and deleted by another worker before we had the lock
            records: list[RawRecord] = []
            for line in file:
                try:
                    records.append(tuple(json.loads(line)))
                except ValueError:
                    continue  # cannot happen for files we renamed into place; skip, never stop
            write(records)
            path.unlink(missing_ok=True)
            return len(records)

    def _remove_stale_temporaries(self) -> None:
        cutoff = time.time() - _STALE_TEMPORARY_SECONDS
        for entry in self._files():
            if entry.name.startswith(_TEMPORARY_PREFIX):
                try:
                    if entry.stat().st_mtime < cutoff:
                        os.unlink(entry.path)
                except FileNotFoundError:
                    pass
