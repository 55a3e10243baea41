"""gunicorn's logger with JSON lines: its error log and access log in the app's format.

Selected by deploy/gunicorn.conf.py when FIB_LOG_FORMAT is `json`; the
formatters are fibproject/logging_config.py's, so gunicorn's lines and the
app's have the same fields. The handlers stay gunicorn's own (GUNICORN_ACCESS_LOG,
GUNICORN_ERROR_LOG, reopened on SIGUSR1).
"""

from __future__ import annotations

from typing import Any

from gunicorn import glogging

from fibproject.logging_config import AccessLogJsonFormatter, JsonLineFormatter


class PlainAtoms(dict[str, Any]):
    """gunicorn's atoms as they are, `-` for a missing one (as its SafeAtoms, without
    escaping quotes for its text format: JSON escapes them itself)."""

    def __missing__(self, key: str) -> Any:
        lowered = key.lower()
        return self[lowered] if lowered != key and lowered in self else "-"


class JsonLinesLogger(glogging.Logger):
    """gunicorn's Logger whose handlers write one JSON object per line."""

    atoms_wrapper_class = PlainAtoms

    def setup(self, cfg: Any) -> None:
        """gunicorn's handlers, then JSON formatters on them (also on a reload's setup)."""
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(JsonLineFormatter())
        for handler in self.access_log.handlers:
            handler.setFormatter(AccessLogJsonFormatter())
