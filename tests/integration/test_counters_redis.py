"""The rate-limit counter cache against the real Redis: exact, atomic, expiring."""

from __future__ import annotations

import threading
import uuid

import pytest
import redis
from django.core.cache import caches
from django.test import RequestFactory
from django_ratelimit.core import get_usage

from tests.conftest import redis_caches

pytestmark = pytest.mark.redis


@pytest.fixture
def counters(settings, redis_url):
    prefix = f"test-{uuid.uuid4().hex}"
    settings.CACHES = redis_caches(redis_url, key_prefix=prefix)
    yield caches["ratelimit"]
    raw = redis.Redis.from_url(redis_url)
    for key in raw.scan_iter(f"{prefix}*"):
        raw.delete(key)


def test_first_increment_creates_the_key_with_the_ttl(counters, redis_url):
    assert counters.add("k", 1, 90) is False
    assert counters.incr("k") == 1
    raw = redis.Redis.from_url(redis_url)
    (key,) = raw.scan_iter(f"{counters.key_prefix}*")
    assert 0 < raw.ttl(key) <= 90
    counters.add("k", 1, 90)
    assert counters.incr("k") == 2
    assert counters.get("k") == 2


def test_django_ratelimit_counts_through_it(counters):
    request = RequestFactory().get("/")
    counts = [
        get_usage(request, group="g", key=lambda g, r: "client", rate="3/h", increment=True)
        for _ in range(4)
    ]
    assert [usage["count"] for usage in counts] == [1, 2, 3, 4]
    assert [usage["should_limit"] for usage in counts] == [False, False, False, True]


def test_concurrent_increments_are_exact(counters):
    def spend():
        for _ in range(50):
            counters.add("shared", 1, 60)
            counters.incr("shared")

    threads = [threading.Thread(target=spend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counters.get("shared") == 400


def test_counting_survives_a_flushed_script_cache(counters, redis_url):
    counters.add("s", 1, 60)
    assert counters.incr("s") == 1
    redis.Redis.from_url(redis_url).script_flush()
    counters.add("s", 1, 60)
    assert counters.incr("s") == 2


def test_counting_survives_a_dropped_connection(counters, redis_url):
    counters.add("d", 1, 60)
    assert counters.incr("d") == 1
    # The server closes the connection the count went over, as a Redis restart would.
    raw = redis.Redis.from_url(redis_url)
    db = str(raw.connection_pool.connection_kwargs.get("db", 0))
    counting = [
        str(client["id"])
        for client in raw.client_list()
        if client["db"] == db and client["cmd"] == "evalsha"
    ]
    assert counting
    for client_id in counting:
        raw.client_kill_filter(_id=client_id)
    counters.add("d", 1, 60)
    assert counters.incr("d") == 2
