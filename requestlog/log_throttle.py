"""Warnings that an outage or a flood cannot turn into a flood of log lines."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

# At most one line per kind of trouble this often.
WARNING_INTERVAL_SECONDS = 60.0


class WarningsPerInterval:
    """Logs a warning of each kind (a key) at most once per interval."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval_seconds: float = WARNING_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval_seconds
        self._clock = clock
        self._last: dict[str, float] = {}

    def warn(self, key: str, message: str, *args: Any) -> bool:
        """Log `message` unless `key` was logged within the interval; whether it was logged."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            return False
        self._last[key] = now
        self._logger.warning(message, *args)
        return True

    def forget(self, key: str) -> None:
        """The trouble of `key` is over: the next one is logged at once."""
        self._last.pop(key, None)
