"""Log lines: JSON objects with the request id in production, text on a terminal; their settings.

The formatters and filters of fibproject/logging_config.py are driven with
real LogRecords; the settings are run with runpy (tests/unit/test_settings.py's
run_settings) under a bare environment.
"""

from __future__ import annotations

import json
import logging
import runpy
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from deploy.gunicorn_logging import PlainAtoms
from fibproject.env import env_choice, env_networks
from fibproject.log_filters import ClientFaultWithoutTraceback
from fibproject.logging_config import (
    REQUEST_ID,
    AccessLogJsonFormatter,
    JsonLineFormatter,
    RequestIdFilter,
)
from tests.unit.test_settings import PRODUCTION, run_settings

GUNICORN_CONF = Path(__file__).resolve().parents[2] / "deploy" / "gunicorn.conf.py"


def _record(message: str = "hello %s", args: tuple[object, ...] = ("world",), **attrs: object):
    record = logging.LogRecord("fibonacci.test", logging.WARNING, __file__, 1, message, args, None)
    for name, value in attrs.items():
        setattr(record, name, value)
    return record


def _json_line(record: logging.LogRecord):
    RequestIdFilter().filter(record)
    line = JsonLineFormatter().format(record)
    assert "\n" not in line
    return json.loads(line)


def test_a_json_line_has_time_level_logger_message_and_no_request_outside_one():
    line = _json_line(_record())
    assert line["message"] == "hello world"
    assert line["level"] == "WARNING"
    assert line["logger"] == "fibonacci.test"
    assert line["time"].endswith("+00:00")
    assert line["request_id"] is None


def test_a_line_written_while_a_request_is_served_carries_its_id():
    token = REQUEST_ID.set("4f1c0ffee")
    try:
        line = _json_line(_record())
    finally:
        REQUEST_ID.reset(token)
    assert line["request_id"] == "4f1c0ffee"
    assert _json_line(_record())["request_id"] is None


def test_extras_are_fields_and_django_objects_are_left_out():
    line = _json_line(_record(status_code=500, request=object()))
    assert line["status_code"] == 500
    assert "request" not in line


def test_a_traceback_stays_inside_the_one_line():
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        import sys

        record = _record(exc_info=sys.exc_info())
    line = _json_line(record)
    assert "ValueError: boom" in line["exc_info"]


def test_client_faults_keep_one_line_under_json_too():
    import sys

    try:
        raise ValueError("bad host")
    except ValueError:
        record = logging.LogRecord(
            "django.security.DisallowedHost", logging.ERROR, __file__, 1, "x", (), sys.exc_info()
        )
    assert ClientFaultWithoutTraceback().filter(record)
    assert "exc_info" not in _json_line(record)


def test_gunicorn_access_records_become_request_fields():
    atoms = PlainAtoms(
        {
            "h": "127.0.0.1",
            "{x-real-ip}i": "203.0.113.9",
            "{x-request-id}o": "abc123",
            "m": "GET",
            "U": "/api/v1/fibonacci/",
            "q": "n=5",
            "H": "HTTP/1.1",
            "s": "200",
            "B": 41,
            "a": 'agent "with" quotes',
            "f": "-",
            "D": 1234,
        }
    )
    record = logging.LogRecord(
        "gunicorn.access", logging.INFO, __file__, 1, "%(h)s %({x-missing}i)s", (atoms,), None
    )
    line = json.loads(AccessLogJsonFormatter().format(record))
    assert line["request_id"] == "abc123"
    assert line["x_real_ip"] == "203.0.113.9"
    assert line["path"] == "/api/v1/fibonacci/"
    assert line["query"] == "n=5"
    assert line["status"] == 200
    assert line["response_bytes"] == 41
    assert line["duration_ms"] == pytest.approx(1.234)
    assert line["user_agent"] == 'agent "with" quotes'
    assert line["referer"] is None
    # gunicorn's text format still works on these atoms (a missing one is `-`).
    assert record.getMessage() == "127.0.0.1 -"


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        ({"DJANGO_DEBUG": "true"}, "text"),
        (PRODUCTION, "json"),
        ({**PRODUCTION, "FIB_LOG_FORMAT": "text"}, "text"),
        ({"DJANGO_DEBUG": "true", "FIB_LOG_FORMAT": "JSON"}, "json"),
    ],
)
def test_the_log_format_follows_debug_unless_set(monkeypatch, environment, expected):
    settings = run_settings(monkeypatch, **environment)
    assert settings["FIB_LOG_FORMAT"] == expected
    assert settings["LOGGING"]["handlers"]["console"]["formatter"] == expected


def test_gunicorn_writes_json_lines_in_production_and_text_for_development(monkeypatch):
    for name, value in PRODUCTION.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FIB_METRICS", "false")
    monkeypatch.delenv("FIB_LOG_FORMAT", raising=False)
    conf = runpy.run_path(str(GUNICORN_CONF), run_name="gunicorn_conf_under_test")
    assert conf["logger_class"] == "deploy.gunicorn_logging.JsonLinesLogger"
    monkeypatch.setenv("FIB_LOG_FORMAT", "text")
    conf = runpy.run_path(str(GUNICORN_CONF), run_name="gunicorn_conf_under_test")
    assert "logger_class" not in conf


def test_an_unknown_log_format_stops_the_start_naming_the_variable(monkeypatch):
    monkeypatch.setenv("FIB_LOG_FORMAT", "xml")
    with pytest.raises(ImproperlyConfigured, match="FIB_LOG_FORMAT must be one of json, text"):
        env_choice("FIB_LOG_FORMAT", choices=("json", "text"), default="json")


def test_metrics_networks_are_addresses_or_cidrs(monkeypatch):
    monkeypatch.setenv("FIB_METRICS_ALLOWED", "10.0.0.0/8, 192.0.2.7,2001:db8::/32")
    assert env_networks("FIB_METRICS_ALLOWED") == ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]


@pytest.mark.parametrize("raw", ["unix", "10.0.0.0/33", "not-an-address"])
def test_a_malformed_metrics_network_stops_the_start_naming_the_variable(monkeypatch, raw):
    monkeypatch.setenv("FIB_METRICS_ALLOWED", raw)
    with pytest.raises(ImproperlyConfigured, match="FIB_METRICS_ALLOWED has an invalid entry"):
        env_networks("FIB_METRICS_ALLOWED")
