"""Ships nginx's edge log into the request log: each line once, rows and position together.

`manage.py ship_edge_log <path>` runs an EdgeLogShipper. It reads complete
lines (ending in a newline) from the stored position, turns them into rows
(requestlog.rows), inserts them (requestlog.writer: the request id, and the
aggregate id, stored once) and commits the new position (inode and byte
offset) in the same transaction, so a restart continues exactly where the
last commit ended. A partial last line waits for its end.

Rotation (logrotate renames `<path>` to `<path>.1`, then `nginx -s reopen`):
the open file is read to its end until nginx has reopened (the new `<path>`
is not empty), and for ROTATION_GRACE_SECONDS more for workers that write
late, then the shipper moves to the new file. Started with a stored inode
that is not `<path>`'s, it finishes `<path>.1` first when that is the file.

The database down: the position stays, lines wait in the file, the batch is
tried again with a backoff up to RETRY_MAX_SECONDS, logged once a minute.
A line that is not the contract's is counted, logged and skipped.

With `metrics` (requestlog.edge_metrics), the lines of each committed batch
are counted there too: the edge's requests, limiter decisions and the
shipping, served by `ship_edge_log --metrics-port`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, transaction
from django.db.models import F
from django.utils import timezone

from .edge_metrics import EdgeMetrics, Tally
from .log_throttle import WarningsPerInterval
from .models import EdgeLogPosition
from .rows import RecordParser, Row, decode_edge_line
from .writer import ROW_ERRORS, insert_aggregates, insert_each, insert_rows

logger = logging.getLogger(__name__)

ROTATED_SUFFIX = ".1"
# One read, and the longest line kept: nginx's lines are a few KB at most
# (4 KB header buffers); a longer one is skipped as malformed.
READ_BYTES = 1024 * 1024
DEFAULT_BATCH_LINES = 1_000
DEFAULT_POLL_SECONDS = 0.5
ROTATION_GRACE_SECONDS = 2.0
# How often the position row is written while nothing is shipped (its lag and time).
HEARTBEAT_SECONDS = 30.0
RETRY_MIN_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0
# How much of a malformed line the log shows.
SAMPLE_BYTES = 200


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def _behind(
    *, inode: int, offset: int, inode_size: int | None, current: os.stat_result | None
) -> int:
    # The unshipped rest of the file being read, plus the new file when rotation left it behind.
    behind = max(0, (inode_size or 0) - offset)
    if current is not None and current.st_ino != inode:
        behind += current.st_size
    return behind


def lag_bytes(path: str, *, using: str = DEFAULT_DB_ALIAS) -> int | None:
    """Bytes of the edge log at `path` written but not shipped yet; None if it was never shipped.

    From the stored position and the files as they are now (`path` and, after
    a rotation, `path.1`), so it needs the host that holds the log.
    """
    path = os.path.abspath(path)
    position = EdgeLogPosition.objects.using(using).filter(path=path).first()
    if position is None:
        return None
    current = _stat(path)
    if current is not None and current.st_ino == position.inode:
        size: int | None = current.st_size
    else:
        rotated = _stat(path + ROTATED_SUFFIX)
        size = rotated.st_size if rotated and rotated.st_ino == position.inode else None
    return _behind(inode=position.inode, offset=position.offset, inode_size=size, current=current)


@dataclass
class _OpenLog:
    """The file being read: its descriptor (kept across renames), inode and committed offset."""

    file: BinaryIO
    inode: int
    offset: int

    def size(self) -> int:
        return os.fstat(self.file.fileno()).st_size

    def close(self) -> None:
        self.file.close()


def _open(path: str) -> _OpenLog | None:
    try:
        file = open(path, "rb", buffering=0)  # noqa: SIM115 - kept open across calls
    except FileNotFoundError:
        return None
    return _OpenLog(file=file, inode=os.fstat(file.fileno()).st_ino, offset=0)


class EdgeLogShipper:
    """Tails one edge log into RequestLog and RequestAggregate; see the module docstring."""

    def __init__(
        self,
        path: str,
        *,
        batch_lines: int = DEFAULT_BATCH_LINES,
        rotation_grace_seconds: float = ROTATION_GRACE_SECONDS,
        parser: RecordParser | None = None,
        using: str = DEFAULT_DB_ALIAS,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = timezone.now,
        metrics: EdgeMetrics | None = None,
    ) -> None:
        self.path = os.path.abspath(path)
        self.batch_lines = batch_lines
        self.rotation_grace_seconds = rotation_grace_seconds
        self.parser = parser or RecordParser.from_settings()
        self.using = using
        self._clock = clock
        self._now = now
        self._log: _OpenLog | None = None
        self._new_file_seen: float | None = None  # when the renamed-away file's successor had lines
        self._position_written: float | None = None
        self._warnings = WarningsPerInterval(logger, clock=clock)
        self.shipped_lines = 0
        self.skipped_lines = 0
        self._skips_unreported = 0
        self.metrics = metrics
        if metrics is not None:
            metrics.watch_lag(self.lag_bytes_now)

    # --- One step -------------------------------------------------------------

    def ship_available(self) -> int:
        """Ship one batch of complete lines, or move to the new file after a rotation.

        Returns the lines consumed (0: nothing to do now). Database errors other
        than a refused row propagate, with nothing committed.
        """
        if self._log is None:
            self._resume()
            if self._log is None:
                return 0
        lines, end = self._read(self._log)
        if lines:
            self._commit(lines, end)
            return len(lines)
        if self._rotation_done():
            self._switch()
        elif self._position_written is None or (
            self._clock() - self._position_written >= HEARTBEAT_SECONDS
        ):
            self._write_position(self._log.inode, self._log.offset, skipped=0, shipped=False)
        return 0

    @property
    def switch_pending(self) -> bool:
        """The log was rotated and the shipper waits out the grace before moving on."""
        return self._new_file_seen is not None

    def lag_bytes_now(self) -> float:
        """Bytes written but not shipped, from the committed offset and the files now.

        Safe from another thread (a scrape). Before the position is read (the
        database down at start), every byte of `<path>` and `<path>.1`.
        """
        log = self._log
        current = _stat(self.path)
        if log is None:
            rotated = _stat(self.path + ROTATED_SUFFIX)
            return float(sum(found.st_size for found in (current, rotated) if found is not None))
        try:
            size: int | None = log.size()
        except (OSError, ValueError):  # closed under us by a switch: the new file next time
            size = None
        return float(_behind(inode=log.inode, offset=log.offset, inode_size=size, current=current))

    def close(self) -> None:
        """Close the file being read."""
        if self._log is not None:
            self._log.close()
            self._log = None

    # --- Where to read ----------------------------------------------------------

    def _resume(self) -> None:
        position = EdgeLogPosition.objects.using(self.using).filter(path=self.path).first()
        current = _open(self.path)
        if position is None:
            if current is None:
                self._warn("missing", "edge log shipper: %s does not exist (yet)", self.path)
            self._log = current
            return
        if current is not None and current.inode == position.inode:
            self._log = self._at(current, position.offset)
            return
        rotated = _open(self.path + ROTATED_SUFFIX)
        if rotated is not None and rotated.inode == position.inode:
            if current is not None:
                current.close()
            logger.info("edge log shipper: finishing %s%s first", self.path, ROTATED_SUFFIX)
            self._log = self._at(rotated, position.offset)
            return
        if rotated is not None:
            rotated.close()
        if current is None:
            self._warn("missing", "edge log shipper: %s does not exist (yet)", self.path)
            return
        logger.error(
            "edge log shipper: the file shipped last (inode %d, shipped to byte %d) is neither "
            "%s nor %s%s; what it held after that byte is not shipped. Starting %s from its start",
            position.inode,
            position.offset,
            self.path,
            self.path,
            ROTATED_SUFFIX,
            self.path,
        )
        self._log = current

    def _at(self, log: _OpenLog, offset: int) -> _OpenLog:
        if offset > log.size():
            logger.error(
                "edge log shipper: %s (inode %d) is shorter than the %d bytes shipped "
                "(truncated?); shipping it from its start",
                self.path,
                log.inode,
                offset,
            )
            offset = 0
        log.offset = offset
        return log

    def _rotation_done(self) -> bool:
        # nginx has reopened once the new file holds a line; the old one may
        # still get a late line from a worker that had not reopened yet.
        assert self._log is not None
        current = _stat(self.path)
        if current is None or current.st_ino == self._log.inode or current.st_size == 0:
            self._new_file_seen = None
            return False
        if self._new_file_seen is None:
            self._new_file_seen = self._clock()
        return self._clock() - self._new_file_seen >= self.rotation_grace_seconds

    def _switch(self) -> None:
        assert self._log is not None
        following = _open(self.path)
        if following is None:
            return
        # A last line nginx never finished (a crash mid-write) is skipped.
        unfinished = 1 if self._log.size() > self._log.offset else 0
        if unfinished:
            self._warn_skipped("an unfinished last line in the rotated file")
        try:
            self._write_position(following.inode, 0, skipped=unfinished, shipped=False)
        except BaseException:
            following.close()
            raise
        if self.metrics is not None:
            self.metrics.skipped.inc(unfinished)
        logger.info(
            "edge log shipper: %s rotated; inode %d shipped, now reading inode %d",
            self.path,
            self._log.inode,
            following.inode,
        )
        self._log.close()
        self._log = following
        self._new_file_seen = None

    # --- Reading and committing -----------------------------------------------

    def _read(self, log: _OpenLog) -> tuple[list[bytes | None], int]:
        """Up to batch_lines complete lines from log's offset, and the offset after them.

        None stands for a line longer than READ_BYTES, skipped.
        """
        data = os.pread(log.file.fileno(), READ_BYTES, log.offset)
        end = data.rfind(b"\n")
        if end >= 0:
            lines: list[bytes | None] = [*data[:end].split(b"\n")[: self.batch_lines]]
            return lines, log.offset + sum(len(line) + 1 for line in lines if line is not None)
        if len(data) == READ_BYTES:
            after = self._end_of_long_line(log)
            if after is not None:
                return [None], after
        return [], log.offset  # a partial line: wait for the rest

    def _end_of_long_line(self, log: _OpenLog) -> int | None:
        position = log.offset + READ_BYTES
        while True:
            data = os.pread(log.file.fileno(), READ_BYTES, position)
            newline = data.find(b"\n")
            if newline >= 0:
                return position + newline + 1
            if len(data) < READ_BYTES:
                return None  # not ended yet: read again once it is
            position += len(data)

    def _commit(self, lines: Sequence[bytes | None], end: int) -> None:
        assert self._log is not None
        requests: list[Row] = []
        aggregates: list[Row] = []
        tally = Tally()
        malformed = 0
        for line in lines:
            try:
                if line is None:
                    raise ValueError(f"longer than {READ_BYTES} bytes")
                fields = decode_edge_line(line)
                kind, row = self.parser.edge_fields(fields)
            except Exception as exc:  # noqa: BLE001 - one bad line must not stop the log
                malformed += 1
                self._warn_skipped(f"a malformed line ({exc}): {(line or b'')[:SAMPLE_BYTES]!r}")
                continue
            (requests if kind == "request" else aggregates).append(row)
            if self.metrics is not None:
                # A row the database refuses below is still a request the edge answered.
                tally.add(kind, row, fields)
        with transaction.atomic(using=self.using):
            refused = self._insert(requests, insert_rows) + self._insert(
                aggregates, insert_aggregates
            )
            committed_at = self._write_position(
                self._log.inode, end, skipped=malformed + refused, shipped=True
            )
        self._log.offset = end
        shipped = len(lines) - malformed - refused
        self.shipped_lines += shipped
        if self.metrics is not None:
            self.metrics.committed(
                tally, shipped=shipped, skipped=malformed + refused, at=committed_at
            )

    def _insert(self, rows: list[Row], insert: Callable[..., None]) -> int:
        # A row the database refuses for what it holds (too long, a NUL) is
        # counted and skipped, as the app's writer does; the others go in.
        try:
            insert(rows, using=self.using)
            return 0
        except ROW_ERRORS:
            pass
        if insert is insert_rows:
            refused = [row for row, _ in insert_each(rows, using=self.using)]
        else:
            refused = []
            for row in rows:
                try:
                    insert([row], using=self.using)
                except ROW_ERRORS:
                    refused.append(row)
        for row in refused:
            self._warn_skipped(f"a line the database refused: {row!r:.{SAMPLE_BYTES}}")
        return len(refused)

    def _write_position(self, inode: int, offset: int, *, skipped: int, shipped: bool) -> datetime:
        """Store the position (in the caller's transaction, if any); returns the time stored."""
        assert self._log is not None
        now = self._now()
        current = _stat(self.path)
        # The lag of the file the position names: the one being read, or the new one.
        size: int | None = None
        if inode == self._log.inode:
            size = self._log.size()
        elif current is not None and current.st_ino == inode:
            size = current.st_size
        values: dict[str, Any] = {
            "inode": inode,
            "offset": offset,
            "lag_bytes": _behind(inode=inode, offset=offset, inode_size=size, current=current),
            "updated": now,
        }
        if shipped:
            values["last_shipped"] = now
        with transaction.atomic(using=self.using):
            positions = EdgeLogPosition.objects.using(self.using).filter(path=self.path)
            if not positions.update(skipped_lines=F("skipped_lines") + skipped, **values):
                EdgeLogPosition.objects.using(self.using).create(
                    path=self.path, skipped_lines=skipped, **values
                )
        self._position_written = self._clock()
        self.skipped_lines += skipped
        return now

    # --- Logging ----------------------------------------------------------------

    def _warn(self, key: str, message: str, *args: Any) -> bool:
        return self._warnings.warn(key, message, *args)

    def _warn_skipped(self, what: str) -> None:
        self._skips_unreported += 1
        if self._warn(
            "skipped",
            "edge log shipper: skipped %s (%d lines skipped since the last such warning)",
            what,
            self._skips_unreported,
        ):
            self._skips_unreported = 0

    # --- The loop ---------------------------------------------------------------

    def run(self, *, stop: threading.Event, poll_seconds: float, once: bool = False) -> None:
        """Ship until stop is set (or, once, until nothing is left); never stops on an error.

        Once: a database error propagates instead of being retried.
        """
        backoff = RETRY_MIN_SECONDS
        down_since: float | None = None
        while not stop.is_set():
            try:
                consumed = self.ship_available()
            except (DatabaseError, OSError) as exc:
                if once:
                    raise
                if down_since is None:
                    down_since = self._clock()
                self._warn(
                    "down",
                    "edge log shipper: cannot ship (%s: %s) for %.0f s; the position stays "
                    "at byte %s, lines wait in the file; retrying every %.1f s at most",
                    type(exc).__name__,
                    str(exc).strip(),
                    self._clock() - down_since,
                    self._log.offset if self._log else "-",
                    RETRY_MAX_SECONDS,
                )
                with suppress(DatabaseError):
                    connections[self.using].close()  # a new connection on the next try
                stop.wait(backoff)
                backoff = min(backoff * 2, RETRY_MAX_SECONDS)
                continue
            if down_since is not None:
                logger.warning(
                    "edge log shipper: shipping again after %.0f s", self._clock() - down_since
                )
                self._warnings.forget("down")
                down_since = None
            backoff = RETRY_MIN_SECONDS
            if consumed:
                continue  # a backlog: no pause between batches
            if once and not self.switch_pending:
                return
            stop.wait(poll_seconds)
