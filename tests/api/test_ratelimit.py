"""Per-client rate limiting through the API: 429 shape, headers, budgets and failures."""

from __future__ import annotations

import logging
import re

import django_ratelimit.core
import pytest

from fibonacci.ratelimit import budgets as ratelimit
from tests.conftest import redis_caches

URL = "/api/v1/fibonacci/"

pytestmark = pytest.mark.django_db


@pytest.fixture
def limits(settings):
    """Small budgets: 3 requests a minute, 2 large ones (n > 100)."""
    settings.FIB_RATE_LIMIT = "3/m"
    settings.FIB_RATE_LIMIT_LARGE = "2/m"
    settings.FIB_LARGE_N = 100
    settings.FIB_LARGE_INDEX = 1_000
    return settings


@pytest.fixture(autouse=True)
def clock(monkeypatch):
    """A controllable clock for django-ratelimit's windows: no test straddles a reset."""

    class Clock:
        now = 1_900_000_000.0

        def time(self):
            return self.now

    fake = Clock()
    monkeypatch.setattr(django_ratelimit.core, "time", fake)
    return fake


@pytest.fixture(autouse=True)
def _no_outage_memory():
    ratelimit._Outage.until = 0.0
    yield
    ratelimit._Outage.until = 0.0


def _get(client, path=URL, remote_addr="203.0.113.7", **extra):
    data = extra.pop("data", {"n": 5})
    return client.get(path, data, REMOTE_ADDR=remote_addr, **extra)


def test_requests_over_the_limit_get_429_problem(client, limits):
    for _ in range(3):
        assert _get(client).status_code == 200
    response = _get(client)
    assert response.status_code == 429
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 429
    assert body["title"] == "Too Many Requests"
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= 60
    assert str(retry_after) in body["detail"]


def test_every_api_response_has_ratelimit_fields(client, limits, clock):
    first = _get(client)
    assert first["RateLimit-Policy"] == '"default";q=3;w=60'
    match = re.fullmatch(r'"default";r=(\d+);t=(\d+)', first["RateLimit"])
    assert match and int(match[1]) == 2 and 1 <= int(match[2]) <= 60
    assert re.fullmatch(r'"default";r=1;t=\d+', _get(client)["RateLimit"])
    assert _get(client, data={"n": "-1"})["RateLimit"].startswith('"default";r=0;')
    limited = _get(client)
    assert limited.status_code == 429
    assert limited["RateLimit"].startswith('"default";r=0;')


def test_retry_after_counts_down_to_the_window_reset(client, limits, clock):
    for _ in range(3):
        _get(client)
    first = int(_get(client)["Retry-After"])
    clock.now += 7
    later = _get(client)
    assert later.status_code == 429
    assert int(later["Retry-After"]) == first - 7
    clock.now += first - 7
    assert _get(client).status_code == 200  # a new window


def test_retry_after_is_not_a_constant_across_clients(client, limits, clock):
    # django-ratelimit staggers windows per key, so resets differ between clients.
    waits = set()
    for last_octet in range(1, 9):
        address = f"198.51.100.{last_octet}"
        for _ in range(3):
            _get(client, remote_addr=address)
        waits.add(_get(client, remote_addr=address)["Retry-After"])
    assert len(waits) > 1


def test_large_requests_have_a_stricter_budget(client, limits):
    settings = limits
    settings.FIB_RATE_LIMIT = "100/m"
    large = {"n": 101}
    first = _get(client, data=large)
    assert first["RateLimit-Policy"] == '"default";q=100;w=60, "large";q=2;w=60'
    assert _get(client, data=large).status_code == 200
    refused = _get(client, data=large)
    assert refused.status_code == 429
    assert _get(client, data={"n": 100}).status_code == 200  # small ones still pass


@pytest.mark.parametrize(
    ("query", "large"),
    [
        ({"n": 100}, False),
        ({"n": 101}, True),
        ({"n": 10, "offset": 2_990}, True),  # few terms, but long ones
        ({"n": 50, "offset": 10}, False),
        ({"n": "x"}, False),
        ({"n": 10, "offset": 2_995}, False),  # past the cap: rejected, not large
    ],
)
def test_large_is_judged_by_response_size(client, limits, query, large):
    limits.FIB_RATE_LIMIT = "100/m"
    response = _get(client, data=query)
    assert ('"large"' in response["RateLimit-Policy"]) is large


@pytest.mark.parametrize(
    ("request_kwargs", "status"),
    [
        ({"HTTP_ACCEPT": "application/xml"}, 406),
        ({"data": {"n": 5, "format": "xml"}}, 400),
        ({"data": {"n": "-1"}}, 400),
    ],
)
def test_refused_requests_spend_the_budget_too(client, limits, request_kwargs, status):
    for _ in range(3):
        response = _get(client, **request_kwargs)
        assert response.status_code == status
        assert response["RateLimit"].startswith('"default";')
    assert _get(client, **request_kwargs).status_code == 429


def test_large_single_terms_count_as_large(client, limits):
    limits.FIB_RATE_LIMIT = "100/m"
    for _ in range(2):
        assert _get(client, path=f"{URL}1001/", data={}).status_code == 200
    assert _get(client, path=f"{URL}1001/", data={}).status_code == 429
    assert _get(client, path=f"{URL}1000/", data={}).status_code == 200


@pytest.mark.parametrize(
    "spoof",
    [
        {"HTTP_X_FORWARDED_FOR": "198.51.100.{i}"},
        {"HTTP_X_REAL_IP": "198.51.100.{i}"},
        {"HTTP_X_FORWARDED_FOR": "198.51.100.{i}", "HTTP_X_REAL_IP": "198.51.100.{i}"},
    ],
)
def test_spoofed_headers_from_an_untrusted_peer_do_not_change_the_budget(client, limits, spoof):
    for i in range(3):
        headers = {name: value.format(i=i) for name, value in spoof.items()}
        assert _get(client, **headers).status_code == 200
    headers = {name: value.format(i=99) for name, value in spoof.items()}
    assert _get(client, **headers).status_code == 429


def test_trusted_proxy_x_real_ip_names_the_client(client, limits):
    limits.FIB_TRUSTED_PROXIES = ["127.0.0.1"]
    for _ in range(3):
        assert _get(client, remote_addr="127.0.0.1", HTTP_X_REAL_IP="192.0.2.1").status_code == 200
    assert _get(client, remote_addr="127.0.0.1", HTTP_X_REAL_IP="192.0.2.1").status_code == 429
    assert _get(client, remote_addr="127.0.0.1", HTTP_X_REAL_IP="192.0.2.2").status_code == 200


def test_ipv6_clients_share_a_budget_per_64(client, limits):
    for host in ("2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::3"):
        assert _get(client, remote_addr=host).status_code == 200
    assert _get(client, remote_addr="2001:db8:1:2::4").status_code == 429
    assert _get(client, remote_addr="2001:db8:1:3::1").status_code == 200


def test_empty_remote_addr_is_limited_not_an_error(client, limits):
    statuses = [_get(client, remote_addr="").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]


@pytest.mark.parametrize(
    "path", ["/healthz", "/readyz", "/api/schema/", "/api/docs/", "/admin/login/"]
)
def test_probes_docs_and_admin_are_not_limited(client, limits, path):
    limits.FIB_RATE_LIMIT = "1/m"
    assert _get(client).status_code == 200
    for _ in range(3):
        response = client.get(path, REMOTE_ADDR="203.0.113.7")
        assert response.status_code == 200
        assert "RateLimit" not in response


def test_limiter_switched_off(client, limits):
    limits.FIB_RATE_LIMIT_ENABLED = False
    assert all(_get(client).status_code == 200 for _ in range(5))
    assert "RateLimit" not in _get(client)


@pytest.fixture
def unreachable_counters(settings, closed_port_url):
    settings.CACHES = redis_caches(closed_port_url)


def test_unreachable_counters_fail_open_and_log_once(client, limits, unreachable_counters, caplog):
    with caplog.at_level(logging.ERROR, logger="fibonacci.ratelimit.budgets"):
        statuses = [_get(client).status_code for _ in range(6)]
    assert statuses == [200] * 6
    assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 1
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["rate_limiter"] == "counters unavailable, failing open"


def test_unreachable_counters_fail_closed_with_503(client, limits, unreachable_counters):
    limits.FIB_RATE_LIMIT_FAIL_CLOSED = True
    response = _get(client)
    assert response.status_code == 503
    assert response["Content-Type"] == "application/problem+json"
    assert int(response["Retry-After"]) > 0
    assert _get(client).status_code == 503


@pytest.mark.parametrize(
    ("rate", "policy"),
    [
        ("7/s", "q=7;w=1"),
        ("100/5m", "q=100;w=300"),
        ("2/h", "q=2;w=3600"),
        ("9/2d", "q=9;w=172800"),
    ],
)
def test_every_rate_form_is_announced_with_its_window(client, settings, rate, policy):
    settings.FIB_RATE_LIMIT = rate
    response = client.get("/api/v1/fibonacci/", {"n": 1})
    assert response["RateLimit-Policy"] == f'"default";{policy}'
    announced = re.fullmatch(r'"default";r=(\d+);t=(\d+)', response["RateLimit"])
    assert announced is not None, response["RateLimit"]
    remaining, reset = announced.groups()
    assert int(remaining) == int(policy[2:].split(";")[0]) - 1
    assert 1 <= int(reset) <= int(policy.rpartition("=")[2])


def test_a_malformed_query_is_counted_and_leaves_the_limiter_on(client, limits, caplog):
    # More parameters than Django parses: a 400 that spends the budget like any
    # request, and is no counter outage (which would stop limiting everyone).
    with caplog.at_level(logging.ERROR, logger="fibonacci.ratelimit.budgets"):
        malformed = client.get(URL + "?n=5" + "&a" * 1_001, REMOTE_ADDR="203.0.113.7")
        statuses = [_get(client).status_code for _ in range(4)]
    assert malformed.status_code == 400
    assert statuses == [200, 200, 429, 429]
    assert not [r for r in caplog.records if "unavailable" in r.getMessage()]
