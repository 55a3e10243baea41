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
