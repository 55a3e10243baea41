"""The request log through the API: what each kind of request records, and what it skips."""

from __future__ import annotations

import pytest
from django.core.cache import caches
from django.db import DatabaseError
from rest_framework.test import APIClient

from fibonacci import sequence as services
from requestlog import buffer as requestlog
from requestlog import writer
from requestlog.buffer import RequestLogBuffer
from requestlog.models import RequestLog

pytestmark = pytest.mark.django_db

URL = "/api/v1/fibonacci/"


@pytest.fixture
def log_buffer():
    """A fresh buffer for this test, written only when the test flushes it."""
    fresh = RequestLogBuffer(capacity=1_000, batch_size=100, flush_seconds=60, background=False)
    previous = requestlog.replace_buffer(fresh)
    yield fresh
    requestlog.replace_buffer(previous)


@pytest.fixture
def client(log_buffer):
    """An API client created after the buffer, so its middleware appends to it."""
    return APIClient()


def _logged():
    requestlog.flush()
    return list(RequestLog.objects.order_by("id"))


@pytest.mark.parametrize(
    ("method", "path", "query", "status", "endpoint", "numbers"),
    [
        ("get", URL, {"n": "5"}, 200, "sequence", {"n": 5, "offset": 0, "index": None}),
        ("get", URL, {"n": "3", "offset": "7"}, 200, "sequence", {"n": 3, "offset": 7}),
        ("get", URL, {"n": "-1", "offset": "2"}, 400, "sequence", {"n": None, "offset": 2}),
        ("get", URL, {"n": "4", "offset": "x"}, 400, "sequence", {"n": 4, "offset": None}),
        ("get", URL, {"n": "99999999999999999999"}, 400, "sequence", {"n": None}),
        ("get", URL, {}, 400, "sequence", {"n": None, "offset": 0}),
        ("get", f"{URL}12/", {}, 200, "term", {"index": 12, "n": None}),
        ("get", f"{URL}abc/", {}, 400, "term", {"index": None}),
        ("post", URL, {}, 405, "sequence", {}),
        ("get", "/api/v1/nothing-here/", {}, 404, "unknown", {"n": None, "index": None}),
        ("get", "/api/v1/", {}, 200, "root", {}),
        ("get", "/api/schema/", {}, 200, "schema", {}),
    ],
)
def test_each_api_request_is_recorded_with_its_fields(
    client, method, path, query, status, endpoint, numbers
):
    response = getattr(client, method)(
        path, query, REMOTE_ADDR="198.51.100.23", HTTP_USER_AGENT="probe/1.0"
    )
    assert response.status_code == status
    [log] = _logged()
    assert log.method == method.upper()
    assert log.endpoint == endpoint
    assert log.status == status
    assert log.client_ip == "198.51.100.23"
    assert log.user_agent == "probe/1.0"
    assert log.response_bytes == len(response.content)
    assert log.duration_ms > 0
    assert log.rate_limited is False
    assert log.request_id == response["X-Request-ID"]
    for field, value in numbers.items():
        assert getattr(log, field) == value, field


def test_not_modified_is_recorded_as_304_with_no_body(client):
    etag = client.get(URL, {"n": "5"})["ETag"]
    response = client.get(URL, {"n": "5"}, HTTP_IF_NONE_MATCH=etag)
    assert response.status_code == 304
    first, second = _logged()
    assert (first.status, second.status) == (200, 304)
    assert second.response_bytes == 0


def test_head_is_recorded_with_no_body_bytes(client):
    response = client.head(URL, {"n": "50"})
    assert response.status_code == 200
    [log] = _logged()
    assert (log.method, log.status, log.response_bytes) == ("HEAD", 200, 0)


def test_unexpected_error_is_recorded_as_500(monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(services, "sequence_window", broken)
    # The exception takes Django's 500 path, which a test client re-raises unless told not to.
    client = APIClient(raise_request_exception=False)
    response = client.get(URL, {"n": "5"})
    assert response.status_code == 500
    [log] = _logged()
    assert (log.status, log.n) == (500, 5)
    assert log.request_id == response["X-Request-ID"]


def test_rate_limited_request_is_recorded_as_rate_limited(client, settings):
    settings.FIB_RATE_LIMIT = "1/m"
    caches["default"].clear()
    address = "192.0.2.201"
    first = client.get(URL, {"n": "5"}, REMOTE_ADDR=address)
    second = client.get(URL, {"n": "5"}, REMOTE_ADDR=address)
    caches["default"].clear()
    assert (first.status_code, second.status_code) == (200, 429)
    logs = _logged()
    assert [(log.status, log.rate_limited) for log in logs] == [(200, False), (429, True)]


def test_query_and_user_agent_are_truncated(client):
    response = client.get(f"{URL}?n=5&pad={'x' * 2_000}", HTTP_USER_AGENT="A" * 1_000)
    assert response.status_code == 200  # unknown parameters are ignored
    [log] = _logged()
    assert len(log.query) == 512
    assert log.query.startswith("n=5&pad=x")
    assert log.user_agent == "A" * 256
    assert log.n == 5


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/admin/login/", "/static/admin/x.css"])
def test_probes_admin_and_static_files_are_not_recorded(client, path):
    response = client.get(path)
    assert "X-Request-ID" not in response
    assert _logged() == []


def test_each_response_gets_a_fresh_request_id(client):
    ids = {client.get(URL, {"n": "1"})["X-Request-ID"] for _ in range(3)}
    assert len(ids) == 3
    assert all(len(value) == 32 and int(value, 16) >= 0 for value in ids)


@pytest.mark.parametrize(
    ("trusted", "given", "kept"),
    [
        (True, "edge-7f3a.42", True),
        (False, "edge-7f3a.42", False),  # anyone can send the header
        (True, "has spaces", False),
        (True, "x" * 65, False),
    ],
)
def test_request_id_is_taken_only_from_a_trusted_proxy(client, settings, trusted, given, kept):
    settings.FIB_TRUSTED_PROXIES = ["10.0.0.0/8"] if trusted else []
    response = client.get(
        URL,
        {"n": "1"},
        REMOTE_ADDR="10.0.0.5",
        HTTP_X_REAL_IP="203.0.113.9",
        HTTP_X_REQUEST_ID=given,
    )
    assert (response["X-Request-ID"] == given) is kept
    [log] = _logged()
    assert log.request_id == response["X-Request-ID"]
    assert log.client_ip == ("203.0.113.9" if trusted else "10.0.0.5")


@pytest.mark.parametrize(
    ("address", "stored"),
    [
        ("203.0.113.77", "203.0.113.0"),
        ("2001:db8:abcd:12:34::1", "2001:db8:abcd::"),
        ("::ffff:198.51.100.9", "198.51.100.0"),
    ],
)
def test_anonymize_stores_ipv4_slash_24_and_ipv6_slash_48(client, settings, address, stored):
    settings.FIB_LOG_IP_ANONYMIZE = True
    client.get(URL, {"n": "1"}, REMOTE_ADDR=address)
    [log] = _logged()
    assert log.client_ip == stored


def test_full_addresses_are_stored_without_anonymize(client, settings):
    settings.FIB_LOG_IP_ANONYMIZE = False
    client.get(URL, {"n": "1"}, REMOTE_ADDR="2001:db8:abcd:12:34::1")
    [log] = _logged()
    assert log.client_ip == "2001:db8:abcd:12:34::1"


def test_switched_off_records_nothing_and_adds_no_header(log_buffer, settings):
    settings.FIB_REQUEST_LOG = False
    response = APIClient().get(URL, {"n": "1"})
    assert response.status_code == 200
    assert "X-Request-ID" not in response
    assert log_buffer.buffered == 0


def test_readyz_shows_buffered_and_dropped_counts(client):
    for _ in range(3):
        client.get(URL, {"n": "1"})
    body = client.get("/readyz").json()
    assert body["status"] == "ok"
    assert body["request_log"] == {"buffered": 3, "dropped": 0, "rejected": 0}


def test_api_keeps_answering_while_the_log_cannot_be_written(client, monkeypatch):
    def refuse(*args, **kwargs):
        raise DatabaseError("database is down")

    monkeypatch.setattr(writer, "insert_rows", refuse)
    assert client.get(URL, {"n": "2"}).status_code == 200
    assert requestlog.flush() == 0
    assert client.get(URL, {"n": "3"}).status_code == 200
    assert requestlog.stats()["buffered"] == 2


def test_a_large_answer_is_recorded_with_its_full_size(client, settings):
    settings.FIB_MAX_N = 3_000
    response = client.get(URL, {"n": 3_000})
    [log] = _logged()
    assert log.response_bytes == len(response.content) > 256 * 1024
