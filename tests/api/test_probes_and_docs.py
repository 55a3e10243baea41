"""Health and readiness probes, the OpenAPI schema and the self-hosted docs."""

from __future__ import annotations

import re

import pytest
from django.core.management import call_command

from tests.conftest import redis_caches

pytestmark = pytest.mark.django_db


def test_healthz_is_ok(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_ok_when_database_and_cache_answer(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"  # beside it, the request log's counts


def test_readyz_stays_ready_but_reports_a_down_cache_when_failing_open(
    client, settings, closed_port_url
):
    settings.CACHES = redis_caches(closed_port_url)
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["cache"] == "cache unavailable"
    # Found by the probe itself, though this process has counted nothing yet.
    assert response.json()["rate_limiter"] == "counters unavailable, failing open"


def test_readyz_is_503_problem_when_the_cache_is_down_and_failing_closed(
    client, settings, closed_port_url
):
    settings.CACHES = redis_caches(closed_port_url)
    settings.FIB_RATE_LIMIT_FAIL_CLOSED = True
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response["Content-Type"] == "application/problem+json"
    assert "cache unavailable" in response.json()["detail"]


def test_readyz_is_503_problem_when_the_database_is_down(client, monkeypatch):
    from django.db.backends.base.base import BaseDatabaseWrapper

    def refuse(self, *args, **kwargs):
        raise OSError("connection refused")

    monkeypatch.setattr(BaseDatabaseWrapper, "cursor", refuse)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "database unavailable" in response.json()["detail"]


def test_readyz_tells_the_public_only_that_it_is_not_ready(client, settings, closed_port_url):
    settings.CACHES = redis_caches(closed_port_url)
    settings.FIB_RATE_LIMIT_FAIL_CLOSED = True
    public = client.get("/readyz", REMOTE_ADDR="203.0.113.9")
    assert public.status_code == 503
    assert public.json()["detail"] == "Not ready."
    operator = client.get("/readyz", REMOTE_ADDR="127.0.0.1")
    assert "rate limiter" in operator.json()["detail"]


def test_schema_is_valid_openapi_without_warnings():
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null")


def test_schema_documents_both_endpoints(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert "/api/v1/fibonacci/" in paths
    assert "/api/v1/fibonacci/{index}/" in paths
    parameters = {p["name"] for p in paths["/api/v1/fibonacci/"]["get"]["parameters"]}
    assert {"n", "offset", "numbers", "format"} <= parameters


def test_docs_page_loads_nothing_from_other_hosts(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any("swagger-ui" in source for source in sources)
    assert all(not source.startswith(("http:", "https:", "//")) for source in sources)


def test_readyz_probes_the_cache_the_rate_limiter_counts_in(client, settings, closed_port_url):
    # The default alias answers; only the limiter's own cache is down.
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "ratelimit": redis_caches(closed_port_url)["ratelimit"],
    }
    settings.FIB_RATE_LIMIT_FAIL_CLOSED = True
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "cache unavailable" in response.json()["detail"]


def test_readyz_detail_is_for_operators_only(client, settings):
    settings.FIB_TRUSTED_PROXIES = ["10.0.0.5"]
    public = client.get("/readyz", REMOTE_ADDR="203.0.113.9")
    through_proxy = client.get("/readyz", REMOTE_ADDR="10.0.0.5", HTTP_X_REAL_IP="198.51.100.4")
    assert public.status_code == through_proxy.status_code == 200
    assert public.json() == through_proxy.json() == {"status": "ok"}
    for operator in (
        {"REMOTE_ADDR": "127.0.0.1"},
        {"REMOTE_ADDR": "::1"},
        {"REMOTE_ADDR": "10.0.0.5"},  # the load balancer asking itself
        {"REMOTE_ADDR": "10.0.0.5", "HTTP_X_REAL_IP": "127.0.0.1"},  # curl on the proxy host
    ):
        body = client.get("/readyz", **operator).json()
        assert set(body) == {"status", "cache", "rate_limiter", "request_log"}, operator
        assert {"buffered", "dropped", "spilled", "spool_files", "spool_bytes"} <= set(
            body["request_log"]
        )


def test_readyz_checks_once_per_interval_however_many_probes(client, monkeypatch):
    from fibonacci import health

    checks: list[int] = []
    real_cache_fault = health._cache_fault

    def counted_cache_fault() -> str | None:
        checks.append(1)
        return real_cache_fault()

    monkeypatch.setattr(health, "_cache_fault", counted_cache_fault)
    for _ in range(20):
        assert client.get("/readyz").status_code == 200
    assert len(checks) == 1
    monkeypatch.setattr(health, "READINESS_INTERVAL_SECONDS", 0.0)
    client.get("/readyz")
    assert len(checks) == 2


def test_readyz_is_503_within_its_deadline_when_the_database_does_not_answer(client, monkeypatch):
    import threading
    import time

    from fibonacci import health

    release = threading.Event()
    real_fault = health._database_fault

    def frozen():
        release.wait(10)  # a server that accepted the connection and stopped
        return real_fault()

    monkeypatch.setattr(health, "_database_fault", frozen)
    monkeypatch.setattr(health, "DATABASE_DEADLINE_SECONDS", 0.3)
    try:
        started = time.monotonic()
        first = client.get("/readyz")
        first_seconds = time.monotonic() - started
        health.forget_readiness()
        started = time.monotonic()
        second = client.get("/readyz")  # the first query still hangs: no second wait
        second_seconds = time.monotonic() - started
    finally:
        release.set()
    assert first.status_code == second.status_code == 503
    assert first["Content-Type"] == "application/problem+json"
    assert "database did not answer within 0.3 s" in first.json()["detail"]
    assert "database did not answer" in second.json()["detail"]
    # Bounded by the deadline, not by the 10 s hang (generous: the machine is shared).
    assert 0.25 < first_seconds < 3.0
    assert second_seconds < 1.0
