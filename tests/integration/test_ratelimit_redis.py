"""Rate limits against the real Redis: shared by workers and by gunicorn instances."""

from __future__ import annotations

import uuid

import pytest
import redis

from tests.conftest import redis_caches
from tests.processes import gunicorn, http_get, service_environment

pytestmark = [pytest.mark.redis, pytest.mark.django_db]

URL = "/api/v1/fibonacci/?n=5"


@pytest.fixture
def key_prefix(redis_url):
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"test-{uuid.uuid4().hex}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)


@pytest.fixture
def service_env(tmp_path, redis_url, key_prefix):
    return service_environment(
        REDIS_URL=redis_url,
        FIB_CACHE_KEY_PREFIX=key_prefix,
        # An hour's window: a test never straddles a reset.
        FIB_RATE_LIMIT="5/h",
        FIB_REQUEST_LOG="false",
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
    )


def test_counters_live_in_redis_with_an_expiry(client, settings, redis_url, key_prefix):
    settings.CACHES = redis_caches(redis_url, key_prefix=key_prefix)
    settings.FIB_RATE_LIMIT = "3/h"
    statuses = [client.get(URL).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    keys = list(redis.Redis.from_url(redis_url).scan_iter(f"{key_prefix}-rl:*"))
    assert len(keys) == 1
    assert 0 < redis.Redis.from_url(redis_url).ttl(keys[0]) <= 3600 + 60


def test_limit_is_shared_across_workers(service_env, tmp_path):
    with gunicorn(env=service_env, workers=3, log_path=tmp_path / "gunicorn.log") as base:
        statuses = [http_get(base + URL)[0] for _ in range(8)]
    assert statuses == [200] * 5 + [429] * 3


def test_limit_is_shared_across_two_instances(service_env, tmp_path):
    log = tmp_path / "gunicorn.log"
    with (
        gunicorn(env=service_env, log_path=log) as first,
        gunicorn(env=service_env, log_path=log) as second,
    ):
        answers = [http_get((first, second)[i % 2] + URL) for i in range(8)]
    assert [status for status, _, _ in answers] == [200] * 5 + [429] * 3
    remaining = [headers["RateLimit"] for _, headers, _ in answers[:5]]
    assert [value.split(";")[1] for value in remaining] == ["r=4", "r=3", "r=2", "r=1", "r=0"]


def test_redis_unreachable_fails_open_in_a_real_process(service_env, tmp_path, closed_port_url):
    service_env["REDIS_URL"] = closed_port_url
    with gunicorn(env=service_env, log_path=tmp_path / "gunicorn.log") as base:
        statuses = [http_get(base + URL)[0] for _ in range(8)]
        ready = http_get(base + "/readyz")
    assert statuses == [200] * 8
    assert ready[0] == 200
    assert b"failing open" in ready[2]


def test_redis_unreachable_fails_closed_when_configured(service_env, tmp_path, closed_port_url):
    service_env.update(REDIS_URL=closed_port_url, FIB_RATE_LIMIT_FAIL_CLOSED="true")
    with gunicorn(env=service_env, log_path=tmp_path / "gunicorn.log") as base:
        status, headers, body = http_get(base + URL)
    assert status == 503
    assert headers["Content-Type"] == "application/problem+json"
