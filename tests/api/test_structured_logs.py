"""The app's log lines as configured (LOGGING): one JSON object each, with the request's id.

The console handler Django configured from settings.LOGGING is pointed at a
buffer for the test; what a request logs must name the id it answered with
in X-Request-ID, which is also its request-log row's.
"""

from __future__ import annotations

import io
import json
import logging

import pytest

from fibonacci.ratelimit import budgets
from fibproject.logging_config import JsonLineFormatter
from requestlog import buffer as request_log
from requestlog.models import RequestLog
from tests.conftest import redis_caches

URL = "/api/v1/fibonacci/"

pytestmark = pytest.mark.django_db


@pytest.fixture
def console_lines():
    """The lines the configured console handler writes during the test, parsed."""
    (handler,) = [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.StreamHandler) and isinstance(h.formatter, JsonLineFormatter)
    ]
    stream = io.StringIO()
    previous = handler.setStream(stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    handler.setStream(previous)


@pytest.fixture(autouse=True)
def _no_outage_memory():
    budgets._Outage.until = 0.0
    yield
    budgets._Outage.until = 0.0


def test_a_line_logged_during_a_request_names_its_request_id(
    client, settings, closed_port_url, console_lines
):
    settings.CACHES = redis_caches(closed_port_url)  # the limiter logs its outage
    response = client.get(URL, {"n": 5})
    assert response.status_code == 200
    lines = [line for line in console_lines() if line["logger"] == "fibonacci.ratelimit.budgets"]
    assert len(lines) == 1
    assert lines[0]["level"] == "ERROR"
    assert "rate-limit counters unavailable" in lines[0]["message"]
    assert lines[0]["request_id"] == response["X-Request-ID"]
    request_log.flush()
    assert RequestLog.objects.get().request_id == response["X-Request-ID"]


def test_an_id_from_our_proxy_is_the_one_logged(client, settings, closed_port_url, console_lines):
    settings.CACHES = redis_caches(closed_port_url)
    settings.FIB_TRUSTED_PROXIES = ["127.0.0.1"]
    client.get(URL, {"n": 5}, REMOTE_ADDR="127.0.0.1", HTTP_X_REQUEST_ID="edge-id-1")
    (line,) = [line for line in console_lines() if line["logger"].startswith("fibonacci.")]
    assert line["request_id"] == "edge-id-1"


def test_an_id_from_anyone_else_is_not_logged(client, settings, closed_port_url, console_lines):
    settings.CACHES = redis_caches(closed_port_url)
    settings.FIB_TRUSTED_PROXIES = []
    response = client.get(URL, {"n": 5}, REMOTE_ADDR="203.0.113.5", HTTP_X_REQUEST_ID="forged")
    (line,) = [line for line in console_lines() if line["logger"].startswith("fibonacci.")]
    assert line["request_id"] == response["X-Request-ID"] != "forged"


def test_a_line_after_the_request_has_no_request_id(client, console_lines):
    client.get(URL, {"n": 5})
    logging.getLogger("fibonacci.test").warning("between requests")
    (line,) = [line for line in console_lines() if line["logger"] == "fibonacci.test"]
    assert line["request_id"] is None
