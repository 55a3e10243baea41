"""Client errors cost no log line each; a disallowed Host is one short line, no traceback."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator

import pytest

from fibproject.log_filters import ClientFaultWithoutTraceback


@pytest.fixture
def console() -> Iterator[io.StringIO]:
    """What the configured console handler (settings.LOGGING) writes, captured."""
    # Django's console handler: the root's one plain StreamHandler (pytest adds subclasses).
    [handler] = [h for h in logging.getLogger().handlers if type(h) is logging.StreamHandler]
    captured = io.StringIO()
    previous = handler.setStream(captured)
    try:
        yield captured
    finally:
        handler.setStream(previous)


def test_rate_limited_and_bad_requests_write_no_log_line(client, settings, console):
    settings.FIB_RATE_LIMIT = "1/m"
    statuses = [client.get("/api/v1/fibonacci/?n=3").status_code for _ in range(20)]
    statuses += [client.get("/api/v1/fibonacci/?n=-1").status_code for _ in range(5)]
    statuses += [client.get("/api/v1/nowhere/").status_code for _ in range(5)]

    assert statuses.count(429) >= 19
    assert set(statuses) <= {200, 400, 404, 429}
    assert console.getvalue() == ""


def test_a_disallowed_host_is_one_line_without_a_traceback(client, console):
    response = client.get("/api/v1/fibonacci/?n=3", HTTP_HOST="evil.example")

    assert response.status_code == 400
    lines = console.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert "django.security.DisallowedHost" in lines[0]
    assert "Invalid HTTP_HOST header: 'evil.example'" in lines[0]
    assert "Traceback" not in console.getvalue()


def test_server_errors_are_still_logged_with_their_traceback():
    record = logging.LogRecord(
        "django.request", logging.ERROR, __file__, 1, "Internal Server Error", (), None
    )
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record.exc_info = sys.exc_info()

    assert ClientFaultWithoutTraceback().filter(record)
    assert record.exc_info is not None
    assert logging.getLogger("django.request").isEnabledFor(logging.ERROR)


def test_answers_while_a_dependency_is_down_write_no_line_each(
    client, settings, console, closed_port_url
):
    from tests.conftest import redis_caches

    settings.CACHES = redis_caches(closed_port_url)
    settings.FIB_RATE_LIMIT_FAIL_CLOSED = True
    statuses = [client.get("/api/v1/fibonacci/?n=3").status_code for _ in range(20)]

    assert set(statuses) == {503}
    lines = console.getvalue().splitlines()
    # The outage itself, once per interval (the limiter's own line), not a line per answer.
    assert 1 <= len(lines) <= 2, lines
    assert not [line for line in lines if "django.request" in line]
