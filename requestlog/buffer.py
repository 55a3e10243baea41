"""The bounded in-process buffer of request records and its writer thread.

One buffer per process. The writer thread starts with the first record (so
after gunicorn forks its workers, never in the master) and writes whenever
FIB_LOG_BATCH_SIZE records wait or FIB_LOG_FLUSH_MS has passed. While the
database is down, records wait; past FIB_LOG_BUFFER_SIZE (plus the one batch
being retried) the oldest are dropped and counted. Memory: about 0.5 KB per
buffered record, so about 5 MB per process at the default bound.
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
from .rows import RawRecord, RecordParser

logger = logging.getLogger(__name__)

# Repeated warnings (database down, records dropped) are logged at most this often.
WARNING_INTERVAL_SECONDS = 60.0


class RequestLogBuffer:
    """Records waiting to be written, and the thread of this process that writes them."""

    def __init__(
        self, *, capacity: int, batch_size: int, flush_seconds: float, background: bool
    ) -> None:
        self.capacity = capacity
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.background = background
        self._reset()

    @classmethod
    def from_settings(cls) -> RequestLogBuffer:
        """A buffer configured by the FIB_LOG_* settings."""
        return cls(
            capacity=settings.FIB_LOG_BUFFER_SIZE,
            batch_size=settings.FIB_LOG_BATCH_SIZE,
            flush_seconds=settings.FIB_LOG_FLUSH_MS / 1000.0,
            background=settings.FIB_LOG_BACKGROUND_WRITER,
        )

    def _reset(self) -> None:
        # Also the state of a freshly forked child: the parent keeps and writes
        # its own records, and its thread and locks do not exist here.
        self._records: deque[RawRecord] = deque(maxlen=self.capacity)
        # A batch taken from the deque whose insert failed; retried first.
        self._pending: list[RawRecord] = []
        self._wake = threading.Event()
        self._flush_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._autostart = self.background
        self._stopping = False
        self.dropped = 0
        self.written = 0
        self._last_warning: dict[str, float] = {}
        self._dropped_reported = 0

    def append(self, record: RawRecord) -> None:
        """Queue one record; the request's only cost: no parsing, no database, no lock."""
        queue = self._records
        if len(queue) >= self.capacity:
            self.dropped += 1  # the deque's bound pushes out the oldest
        queue.append(record)
        if len(queue) == self.batch_size:
            self._wake.set()
        if self._thread is None and self._autostart:
            self._start()

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
        self.flush()
        connections.close_all()  # this thread's connections only

    @property
    def buffered(self) -> int:
        """Records not yet written."""
        return len(self._records) + len(self._pending)

    def _take(self, count: int) -> list[RawRecord]:
        batch: list[RawRecord] = []
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
                rows = RecordParser.from_settings().rows(self._pending)
                try:
                    writer.insert_rows(rows)
                except Exception as exc:  # noqa: BLE001 - database down or slow: keep the batch
                    self._warn(
                        "write",
                        "request log: cannot write (%s); %d records waiting",
                        exc,
                        self.buffered,
                    )
                    break
                written += len(rows)
                self._pending = []
            self.written += written
        self._report_drops()
        return written

    def _warn(self, key: str, message: str, *args: Any) -> bool:
        # At most one line per key and interval: an outage must not flood the log.
        now = time.monotonic()
        last = self._last_warning.get(key)
        if last is not None and now - last < WARNING_INTERVAL_SECONDS:
            return False
        self._last_warning[key] = now
        logger.warning(message, *args)
        return True

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

    def stop(self, *, timeout_seconds: float) -> None:
        """Write what is buffered and stop the writer; later records wait for the next stop."""
        self._autostart = False
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            self._stopping = True
            self._wake.set()
            thread.join(timeout_seconds)
            if thread.is_alive():
                logger.warning(
                    "request log: writer still busy after %.1f s; %d records may be lost",
                    timeout_seconds,
                    self.buffered,
                )
                return
        self._thread = None
        if self.buffered:
            self.flush()
        if self.buffered:
            logger.warning("request log: %d records could not be written", self.buffered)

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
    """Records waiting to be written, and records dropped since the process started."""
    if _current is None:
        return {"buffered": 0, "dropped": 0}
    return {"buffered": _current.buffered, "dropped": _current.dropped}


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
