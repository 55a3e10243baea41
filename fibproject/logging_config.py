"""How log lines look: one JSON object per line in production, plain text on a terminal.

FIB_LOG_FORMAT picks `json` (the default with debug off) or `text` (the
default under `make run`). Used by LOGGING in fibproject/settings.py and by
gunicorn's logger (deploy/gunicorn_logging.py), so the app's lines and
gunicorn's error and access lines have the same fields. Every line of the
app written while a request is served carries that request's id, the one
sent back as X-Request-ID and stored in the request log
(requestlog/middleware.py sets it in REQUEST_ID). No Django settings are read
here (gunicorn's logger imports this before Django starts).
"""

from __future__ import annotations

import datetime
import logging
from contextvars import ContextVar
from typing import Any

from pythonjsonlogger.json import JsonFormatter

LOG_FORMATS = ("json", "text")
# The request being served in this thread: its id, or None outside a request.
REQUEST_ID: ContextVar[str | None] = ContextVar("fibonacci_request_id", default=None)

# The fields of every JSON line, renamed to short, common names.
_JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s"
_RENAMED = {"asctime": "time", "levelname": "level", "name": "logger"}
# Extras Django attaches that are objects, not data: the request is named by its id.
_NOT_LOGGED = ("request", "server_time")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class RequestIdFilter(logging.Filter):
    """Gives each record the id of the request being served (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Set record.request_id unless the caller passed one; never drops a record."""
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        return True


class JsonLineFormatter(JsonFormatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, request_id."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("fmt", _JSON_FIELDS)
        kwargs.setdefault("rename_fields", _RENAMED)
        kwargs.setdefault(
            "reserved_attrs",
            [*logging.LogRecord("", 0, "", 0, "", (), None).__dict__, *_NOT_LOGGED],
        )
        super().__init__(*args, **kwargs)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        """ISO 8601 in UTC with milliseconds, as nginx's and the request log's times read."""
        moment = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
        return moment.isoformat(timespec="milliseconds")


# gunicorn's access log atoms (its `access_log_format` documentation) -> our field names.
ACCESS_LOG_FIELDS = {
    "request_id": "{x-request-id}o",
    # The X-Real-IP sent, which the app believes only from FIB_TRUSTED_PROXIES.
    "x_real_ip": "{x-real-ip}i",
    "remote_addr": "h",
    "method": "m",
    "path": "U",
    "query": "q",
    "protocol": "H",
    "status": "s",
    "response_bytes": "B",
    "user_agent": "a",
    "referer": "f",
}


class AccessLogJsonFormatter(JsonLineFormatter):
    """gunicorn's access records as JSON: the request's fields from gunicorn's atoms.

    gunicorn logs each request with its atoms (a dict) as the record's args;
    absent values (gunicorn writes `-`) become null. The request id is the
    X-Request-ID the app answered with, so the line matches the app's lines,
    the request log row and nginx's log.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The line: gunicorn's text message is never formatted."""
        log_data: dict[str, Any] = {}
        self.add_fields(log_data, record, {})
        return self.serialize_log_record(log_data)

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        """time, level, logger, then the request's fields instead of gunicorn's message."""
        atoms = record.args if isinstance(record.args, dict) else {}
        log_data["time"] = self.formatTime(record)
        log_data["level"] = record.levelname
        log_data["logger"] = record.name
        for field, atom in ACCESS_LOG_FIELDS.items():
            value = atoms.get(atom)
            log_data[field] = None if value in (None, "-", "") else value
        for field in ("status", "response_bytes"):
            log_data[field] = _as_int(log_data[field])
        duration_us = _as_int(atoms.get("D"))
        log_data["duration_ms"] = None if duration_us is None else duration_us / 1000.0


def _as_int(value: object) -> int | None:
    if isinstance(value, int):
        return value
    return int(value) if isinstance(value, str) and value.isdigit() else None


def logging_config(*, log_format: str, level: str) -> dict[str, Any]:
    """LOGGING for Django: the console in `log_format`, request ids, one line per client fault.

    Expected client errors cost no log line each: they are in the request log
    and the access logs already, and a flood of 429s must not become a flood of
    lines. django.request logs 4xx answers at WARNING and 5xx at ERROR: only
    the latter are kept. A disallowed Host (which nginx refuses before it gets
    here) and other django.security records are one line, without a traceback.
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "text": {"format": TEXT_FORMAT},
            "json": {"()": "fibproject.logging_config.JsonLineFormatter"},
        },
        "filters": {
            "client_fault": {"()": "fibproject.log_filters.ClientFaultWithoutTraceback"},
            "request_id": {"()": "fibproject.logging_config.RequestIdFilter"},
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": log_format,
                "filters": ["client_fault", "request_id"],
            }
        },
        "loggers": {"django.request": {"level": "ERROR"}},
        "root": {"handlers": ["console"], "level": level},
    }


def default_log_format(*, debug: bool) -> str:
    """`text` for a developer's terminal (debug on), `json` for production."""
    return "text" if debug else "json"
