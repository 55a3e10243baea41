"""The bounded in-process buffer of request records and its writer thread.

One buffer per process. The writer thread starts with the first record (so
after gunicorn forks its workers, never in the master) and writes whenever
FIB_LOG_BATCH_SIZE records wait or FIB_LOG_FLUSH_MS has passed. While the
database is down, records wait; past FIB_LOG_BUFFER_SIZE (plus the one batch
being retried) the oldest are dropped and counted.

Records that cannot reach the database are spilled to the local spool
(requestlog/spool.py) rather than lost: by a worker that exits (stop,
reload, max_requests) while the database is down or does not answer within
the exit wait, and by the writer when half the buffer waits during an
outage. The writer writes spooled files back once the database answers.

A batch the database refuses for what a row holds (a value its column cannot
hold, a CHECK violation) would be refused on every retry and hold up every
record behind it: it is written again row by row, and the rows refused are
counted as rejected and logged, not retried. A lost connection is retried.

Memory per buffered record (tracemalloc over 10,000;
`python bench/request_log_footprint.py`): about 0.45 KB for a typical request, 1.2 KB at the
lengths a row keeps (512-character query, 256-character user agent, IPv6,
64-character request id), and up to 8.6 KB at nginx's 4 KB request-line and
header limits, because the raw query and user agent are kept whole until the
writer parses them. At the default bound: 4.5 MB, 12 MB, at most 86 MB per process.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import deque
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connections

from . import writer
from .log_throttle import WarningsPerInterval
from .rows import COLUMNS, RawRecord, RecordParser
from .spool import RequestLogSpool

logger = logging.getLogger(__name__)

# A write running this long is stuck (a database that accepted and froze: no
# driver timeout reaches a query blocked in the kernel); half a buffer then
# goes to the spool from the request thread, since the writer cannot take it.
STUCK_WRITE_SECONDS = 5.0
_REQUEST_ID = COLUMNS.index("request_id")


class RequestLogBuffer:
    """Records waiting to be written, and the thread of this process that writes them."""

    def __init__(
        self,
        *,
        capacity: int,
        batch_size: int,
        flush_seconds: float,
        background: bool,
        spool: RequestLogSpool | None = None,
    ) -> None:
        self.capacity = capacity
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.background = background
        # None: records that cannot be written at exit are lost (counted as dropped).
        self.spool = spool
        self._reset()

    @classmethod
    def from_settings(cls) -> RequestLogBuffer:
        """A buffer configured by the FIB_LOG_* settings."""
        return cls(
            capacity=settings.FIB_LOG_BUFFER_SIZE,
            batch_size=settings.FIB_LOG_BATCH_SIZE,
            flush_seconds=settings.FIB_LOG_FLUSH_MS / 1000.0,
            background=settings.FIB_LOG_BACKGROUND_WRITER,
            spool=RequestLogSpool.from_settings(),
        )

    def _reset(self) -> None:
        # Also the state of a freshly forked child: the parent keeps and writes
        # its own records, and its thread and locks do not exist here.
        self._records: deque[RawRecord] = deque(maxlen=self.capacity)
        # A batch taken from the deque whose insert failed; retried first.
        self._pending: list[RawRecord] = []
        self._wake = threading.Event()
        self._flush_lock = threading.Lock()
        # Held while records leave the deque, so a spill at exit and the writer
        # never split a batch between them.
        self._take_lock = threading.Lock()
        # Set at exit once everything left was spilled: the writer takes no more.
        self._closed = False
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._autostart = self.background
        self._stopping = False
        self.dropped = 0
        # Records never to be written: refused by the database for their data, or unparsable.
        self.rejected = 0
        self.written = 0
        self.spilled = 0
        # When the write under way started (monotonic), or None; whether the last one failed.
        self._write_started: float | None = None
        self._failing = False
        self._warnings = WarningsPerInterval(logger)
        self._dropped_reported = 0

    def append(self, record: RawRecord) -> None:
        """Queue one record: no parsing, no database, no lock (unless the writer is stuck)."""
        queue = self._records
        if len(queue) >= self.capacity:
            self.dropped += 1  # the deque's bound pushes out the oldest
        queue.append(record)
        if len(queue) == self.batch_size:
            self._wake.set()
        if self._thread is None and self._autostart:
            self._start()
        if len(queue) * 2 >= self.capacity and self.spool is not None:
            self._spill_if_writer_cannot()

    def _spill_if_writer_cannot(self) -> None:
        # Half the buffer waits and the writer will not take it soon: its last
        # write failed (the next attempt may wait a connect timeout while
        # requests fill the rest), or the write under way is stuck.
        started = self._write_started
        stuck = started is not None and time.monotonic() - started >= STUCK_WRITE_SECONDS
        if self._failing or stuck:
            self._spill(self._take(len(self._records)))

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is not None or not self._autostart:
                return
            thread = threading.Thread(target=self._run, name="request-log-writer", daemon=True)
            thread.start()
            self._thread = thread

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            # Reconnect after a failure; not in flush(), whose caller may be inside a transaction.
            close_old_connections()
            self.flush()
            if not self.buffered:  # the database answers: write what waits on disk too
                self._drain_spool()
        self.flush()
        connections.close_all()  # this thread's connections only

    @property
    def buffered(self) -> int:
        """Records not yet written."""
        return len(self._records) + len(self._pending)

    def _take(self, count: int) -> list[RawRecord]:
        batch: list[RawRecord] = []
        with self._take_lock:
            if self._closed:
                return batch
            popleft = self._records.popleft
            try:
                for _ in range(count):
                    batch.append(popleft())
            except IndexError:
                pass
        return batch

    def flush(self) -> int:
        """Write every buffered record now, in batches; return how many. Never raises.

        On a database error the batch stays pending and is retried on the next
        flush; the records behind it wait in the deque.
        """
        written = 0
        with self._flush_lock:
            while True:
                if not self._pending:
                    self._pending = self._take(self.batch_size)
                    if not self._pending:
                        break
                try:
                    stored = self._write(self._pending)
                except Exception as exc:  # noqa: BLE001 - database down or slow: keep the batch
                    self._failing = True
                    self._warn(
                        "write",
                        "request log: cannot write (%s); %d records waiting",
                        exc,
                        self.buffered,
                    )
                    # A long outage: move the waiting records to disk before
                    # the buffer's bound drops them; the failed batch is retried.
                    if self.spool is not None and len(self._records) * 2 >= self.capacity:
                        self._spill(self._take(len(self._records)))
                    break
                self._failing = False
                written += stored
                self._pending = []
            self.written += written
        self._report_drops()
        return written

    def _write(self, records: list[RawRecord]) -> int:
        """Write records, rejecting those the database refuses for their data; return how many.

        Raises, having counted nothing, when the database cannot take them (the
        caller keeps them for a retry).
        """
        rows = RecordParser.from_settings().rows(records)  # logs and skips the unparsable
        self._write_started = time.monotonic()
        try:
            try:
                writer.insert_rows(rows)
                refused = []
            except writer.ROW_ERRORS:
                refused = writer.insert_each(rows)
        finally:
            self._write_started = None
        self.rejected += len(records) - len(rows) + len(refused)
        if refused:
            row, error = refused[0]
            # The error's first line names the column or constraint; the rest
            # (PostgreSQL's "Failing row contains ...") would log the row itself.
            reason = str(error).strip().partition("\n")[0] or type(error).__name__
            self._warn(
                "reject",
                "request log: rejected %d of %d records the database refused (%d in all);"
                " the first, request id %s: %s",
                len(refused),
                len(rows),
                self.rejected,
                row[_REQUEST_ID],
                reason,
            )
        return len(rows) - len(refused)

    def _warn(self, key: str, message: str, *args: Any) -> bool:
        return self._warnings.warn(key, message, *args)

    def _report_drops(self) -> None:
        dropped = self.dropped
        if dropped > self._dropped_reported and self._warn(
            "drop",
            "request log: dropped %d records (%d in all) because %d were waiting",
            dropped - self._dropped_reported,
            dropped,
            self.capacity,
        ):
            self._dropped_reported = dropped

    def _drain_spool(self) -> int:
        """Write up to ten spooled files (any worker's); return the records written."""
        if self.spool is None:
            return 0

        def write(records: list[RawRecord]) -> None:
            self._write(records)

        try:
            with self._flush_lock:
                rejected = self.rejected
                # drain() counts every record of a file it wrote, rejected ones too.
                written = self.spool.drain(write, max_files=10) - (self.rejected - rejected)
        except Exception as exc:  # noqa: BLE001 - the file stays for the next attempt
            self._warn("spool-write", "request log: cannot write spooled records (%s)", exc)
            return 0
        self.written += written
        return written

    def _spill(self, records: list[RawRecord]) -> None:
        """Records to the spool; what does not fit (or has no spool) is dropped and counted."""
        if not records:
            return
        if self.spool is None:
            self.dropped += len(records)
            logger.warning("request log: %d records could not be written", len(records))
            return
        result = self.spool.spill(records)
        self.spilled += result.spilled
        if result.dropped:
            self.dropped += result.dropped
            self._warn(
                "spool-full",
                "request log: spool %s full (%d bytes at most) or not writable: dropped %d records",
                self.spool.directory,
                self.spool.max_bytes,
                result.dropped,
            )

    def _spill_everything_left(self) -> None:
        with self._take_lock:
            self._closed = True
            records = [*self._pending, *self._records]
            self._pending = []
            self._records.clear()
        if records:
            self._spill(records)
            logger.warning(
                "request log: database unavailable at exit; %d records spooled to %s",
                len(records),
                self.spool.directory if self.spool is not None else "nowhere",
            )

    def stop(self, *, timeout_seconds: float) -> None:
        """Write what is buffered, or spool it, and stop the writer; never waits longer.

        A writer stuck on a database that does not answer is left behind (a
        daemon thread, gone with the process) and everything it has not
        written is spooled, including the batch it is writing: should that
        batch commit after all, the unique request id keeps it written once.
        """
        self._autostart = False
        thread = self._thread
        ran = thread is not None and thread.is_alive() and thread is not threading.current_thread()
        if ran and thread is not None:
            self._stopping = True
            self._wake.set()
            thread.join(timeout_seconds)
        self._thread = None
        if not ran and self.buffered:
            self.flush()  # no writer thread ran: write here, in the caller
        if self.buffered:
            self._spill_everything_left()
        self._closed = False  # later records wait for the next stop, as before

    def after_fork_in_child(self) -> None:
        """Forget the parent's records, thread and locks."""
        self._reset()


_current: RequestLogBuffer | None = None
_current_lock = threading.Lock()


def current_buffer() -> RequestLogBuffer:
    """This process's buffer, created from settings on first use."""
    global _current
    if _current is None:
        with _current_lock:
            if _current is None:
                _current = RequestLogBuffer.from_settings()
    return _current


def replace_buffer(buffer: RequestLogBuffer | None) -> RequestLogBuffer | None:
    """Make `buffer` this process's buffer (None: rebuild from settings); return the old one."""
    global _current
    previous, _current = _current, buffer
    return previous


def flush() -> int:
    """Write everything buffered now, in the calling thread; return how many were written."""
    return _current.flush() if _current is not None else 0


def stats() -> dict[str, int]:
    """This process's records waiting, dropped, rejected, spilled (with a spool); spool size."""
    buffer = _current
    if buffer is None:
        return {"buffered": 0, "dropped": 0, "rejected": 0}
    counts = {"buffered": buffer.buffered, "dropped": buffer.dropped, "rejected": buffer.rejected}
    if buffer.spool is not None:
        counts["spilled"] = buffer.spilled
        counts.update(buffer.spool.stats())
    return counts


def shutdown(timeout_seconds: float = 5.0) -> None:
    """Flush everything buffered and stop the background writer (safe to call twice)."""
    if _current is not None:
        _current.stop(timeout_seconds=timeout_seconds)


def _after_fork_in_child() -> None:
    if _current is not None:
        _current.after_fork_in_child()


# gunicorn workers leave through sys.exit on SIGTERM, SIGQUIT and SIGHUP
# reloads, and runserver exits normally on Ctrl-C: atexit runs in all of them.
atexit.register(shutdown)
os.register_at_fork(after_in_child=_after_fork_in_child)
