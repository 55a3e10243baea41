"""The edge: nginx counts the app's budgets for every request and answers repeats from its cache.

nginx is rendered with the edge (deploy/edge/) in front of a real gunicorn,
counting in the real Redis the app uses, or in nginx's shared memory when the
app has no Redis. What is checked is what a client and an operator see: the
budgets spent by cache hits as by misses, one budget across the edge and a
directly reached app node, answers that never cross representations, errors
never cached, and the behaviour with the counters down.
"""

from __future__ import annotations

import gzip
import json
import re
import secrets
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import pytest
from django_ratelimit.core import _get_window, _make_cache_key
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from fibonacci.ratelimit import budgets
from tests.conftest import reference_fibonacci

from .conftest import (
    GENEROUS_NGINX,
    UNLIMITED_ENV,
    AppInstance,
    LoadGenerator,
    NginxInstance,
    Reply,
    http_request,
    new_client_address,
)
from .test_nginx_refusals import raw_exchange

BUDGET = 5
LARGE_BUDGET = 2


@pytest.fixture(scope="module")
def app(module_stack_factory):
    """One gunicorn instance with small hourly budgets (a window cannot end mid-test)."""
    (instance,) = module_stack_factory.start_apps(
        1,
        FIB_RATE_LIMIT=f"{BUDGET}/h",
        FIB_RATE_LIMIT_LARGE=f"{LARGE_BUDGET}/h",
        FIB_LARGE_N="1000",
    )
    return instance


@pytest.fixture(scope="module")
def edge(module_stack_factory, app):
    """nginx with the edge, its shipped limits, in front of app."""
    return module_stack_factory.start_nginx([app], edge=True)


def unique_sequence_url(n: int = 7, *, offset: int | None = None) -> str:
    """A URL no other test asks for, so that its first request is a cache miss."""
    offset = secrets.randbelow(2000) if offset is None else offset
    return f"/api/v1/fibonacci/?n={n}&offset={offset}&t={secrets.token_hex(4)}"


def _edge_log_text(edge: NginxInstance) -> str:
    """The edge log as the shipper reads it: bytes past ASCII are passed on raw by nginx."""
    assert edge.edge is not None
    return edge.edge.log.read_bytes().decode("latin-1")


def edge_log(edge: NginxInstance, *, client: str, count: int = 0) -> list[dict[str, Any]]:
    """The edge log's request lines of one client, in order: at least `count` of them.

    nginx writes a line after the answer is sent, so a client may read its
    answer before the line is there: this waits for `count` lines (5 s at most).
    """
    assert edge.edge is not None
    deadline = time.monotonic() + 5
    while True:
        lines = [json.loads(line) for line in _edge_log_text(edge).splitlines()]
        mine = [line for line in lines if line.get("k") == "r" and line["c"] == client]
        if len(mine) >= count or time.monotonic() > deadline:
            return mine
        time.sleep(0.05)


def seen_by_app(app: AppInstance, replies: list[Reply]) -> list[bool]:
    """Whether each reply's request reached the app (its id in gunicorn's access log).

    gunicorn too logs after answering: waits 1 s for every id to appear."""
    deadline = time.monotonic() + 1
    while True:
        text = app.access_log_text()
        seen = [(reply.header("X-Request-ID") or "?") in text for reply in replies]
        if all(seen) or time.monotonic() > deadline:
            return seen
        time.sleep(0.05)


def remaining(reply: Reply) -> dict[str, int]:
    """The `r` of each budget in the RateLimit field."""
    field = reply.header("RateLimit") or ""
    return {name: int(r) for name, r in re.findall(r'"(\w+)";r=(\d+)', field)}


def default_counter(app: AppInstance, client: str, quota: int, settings: Any) -> str:
    """The Redis key of client's hourly default budget, named by django-ratelimit's functions."""
    settings.RATELIMIT_HASH_ALGORITHM = "hashlib.md5"
    window = _get_window(client, 3600)
    name = _make_cache_key("fibonacci.default", window, (quota, 3600), client, "")
    return f"{app.env['FIB_CACHE_KEY_PREFIX']}-rl:1:{name}"


def test_cache_hits_spend_the_budget_and_show_what_is_left(edge, app, client_address):
    url = unique_sequence_url()
    replies = [edge.get(url, source=client_address) for _ in range(BUDGET + 2)]

    assert [reply.status for reply in replies] == [200] * BUDGET + [429] * 2
    assert [remaining(reply)["default"] for reply in replies] == [4, 3, 2, 1, 0, 0, 0]
    assert len({reply.body for reply in replies[:BUDGET]}) == 1
    lines = edge_log(edge, client=client_address, count=len(replies))
    assert [line["cs"] for line in lines] == ["MISS"] + ["HIT"] * (BUDGET - 1) + [""] * 2
    assert [line["l"] for line in lines] == [""] * BUDGET + ["default"] * 2
    assert [line["id"] for line in lines] == [reply.header("X-Request-ID") for reply in replies]
    # Only the miss reached the app.
    assert seen_by_app(app, replies) == [True] + [False] * (BUDGET + 1)


def test_an_edge_429_is_the_apps_problem_with_retry_after(edge, client_address):
    url = unique_sequence_url()
    for _ in range(BUDGET):
        edge.get(url, source=client_address)
    refused = edge.get(url, source=client_address)

    assert refused.status == 429
    assert refused.header("Content-Type") == "application/problem+json"
    assert refused.header("Cache-Control") == "no-store"
    reset_field = re.search(r";t=(\d+)", refused.header("RateLimit") or "")
    assert reset_field is not None
    reset = int(reset_field.group(1))
    assert refused.header("Retry-After") == str(reset)
    assert refused.json() == {
        "type": "about:blank",
        "title": "Too Many Requests",
        "status": 429,
        "detail": f"Too many requests; retry in {reset} seconds.",
    }
    assert refused.header("RateLimit-Policy") == f'"default";q={BUDGET};w=3600'
    assert refused.header("X-Frame-Options") == "DENY"


def test_the_edge_and_a_directly_reached_app_node_spend_one_budget(
    edge, app, client_address, e2e_redis, settings
):
    url = unique_sequence_url()
    through_edge = [edge.get(url, source=client_address) for _ in range(3)]
    direct = [http_request(app.port, url, source=client_address) for _ in range(2)]
    after = edge.get(url, source=client_address)

    assert [r.status for r in through_edge + direct] == [200] * 5
    assert [remaining(r)["default"] for r in direct] == [1, 0]
    assert after.status == 429
    # The counter is the one django-ratelimit's own functions name, in the app's cache.
    import redis

    client = redis.Redis.from_url(e2e_redis[0])
    try:
        assert client.get(default_counter(app, client_address, BUDGET, settings)) == b"6"
    finally:
        client.close()


def test_large_requests_spend_the_large_budget_at_the_edge(edge, client_address):
    url = unique_sequence_url(n=2000)
    replies = [edge.get(url, source=client_address) for _ in range(LARGE_BUDGET + 1)]

    assert [reply.status for reply in replies] == [200] * LARGE_BUDGET + [429]
    assert replies[0].header("RateLimit-Policy") == (
        f'"default";q={BUDGET};w=3600, "large";q={LARGE_BUDGET};w=3600'
    )
    assert [remaining(reply) for reply in replies] == [
        {"default": 4, "large": 1},
        {"default": 3, "large": 0},
        {"default": 2, "large": 0},
    ]
    assert edge_log(edge, client=client_address, count=3)[-1]["l"] == "large"
    assert (
        replies[0].json()["sequence"]
        == reference_fibonacci(replies[0].json()["offset"] + 2000)[-2000:]
    )


def test_ipv6_clients_spend_the_budget_of_their_64(edge, e2e_redis, settings):
    url = unique_sequence_url()
    reply = http_request(edge.port, url, source="::1", host="[::1]")
    assert reply.status == 200
    import redis

    redis_url, key_prefix = e2e_redis
    settings.RATELIMIT_HASH_ALGORITHM = "hashlib.md5"
    key = "::/64"  # fibonacci.addresses.budget_key("::1")
    name = _make_cache_key("fibonacci.default", _get_window(key, 3600), (BUDGET, 3600), key, "")
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.get(f"{key_prefix}-rl:1:{name}") is not None
    finally:
        client.close()


@pytest.mark.parametrize(
    ("headers", "query", "content_type"),
    [
        ({"Accept": "application/json"}, "", "application/json"),
        ({"Accept": "text/plain"}, "", "text/plain; charset=utf-8"),
        ({}, "&format=text", "text/plain; charset=utf-8"),
        ({"Accept": "*/*"}, "&format=json", "application/json"),
    ],
)
def test_a_cached_answer_is_never_served_for_another_representation(
    edge, headers, query, content_type
):
    url = unique_sequence_url(n=30)
    first_client, second_client = new_client_address(), new_client_address()
    # Prime the cache with every other representation of the same URL.
    for other in ({"Accept": "application/json"}, {"Accept": "text/plain"}, {}):
        edge.get(url, source=first_client, headers=other)
        edge.get(url, source=first_client, headers=other | {"Accept-Encoding": "gzip"})
    reply = edge.get(url + query, source=second_client, headers=headers)
    zipped = edge.get(
        url + query, source=second_client, headers=headers | {"Accept-Encoding": "gzip"}
    )

    assert reply.header("Content-Type") == content_type
    assert zipped.header("Content-Type") == content_type
    assert reply.header("Content-Encoding") is None
    numbers = reference_fibonacci(int(url.split("offset=")[1].split("&")[0]) + 30)[-30:]
    expected = " ".join(map(str, numbers)) if content_type.startswith("text/") else None
    if expected is not None:
        assert reply.body.decode().strip() == expected
    else:
        assert reply.json()["sequence"] == numbers
    if zipped.header("Content-Encoding") == "gzip":
        assert gzip.decompress(zipped.body) == reply.body
    else:
        assert zipped.body == reply.body


def test_a_gzip_answer_is_compressed_once_and_served_from_the_cache(edge, app, client_address):
    url = unique_sequence_url(n=900, offset=0)  # about 90 KB, not large
    replies = [
        edge.get(url, source=client_address, headers={"Accept-Encoding": "gzip"}) for _ in range(3)
    ]
    plain = edge.get(url, source=client_address)

    assert [reply.header("Content-Encoding") for reply in replies] == ["gzip"] * 3
    assert len({reply.body for reply in replies}) == 1
    assert gzip.decompress(replies[0].body) == plain.body
    assert plain.header("Content-Encoding") is None
    lines = edge_log(edge, client=client_address, count=4)
    assert [line["cs"] for line in lines] == ["MISS", "HIT", "HIT", "MISS"]


@pytest.mark.parametrize(
    "query", ["n=-1", "n=abc", "n=5&n=6", "n=10001"], ids=["negative", "letters", "twice", "max"]
)
def test_errors_are_never_cached(edge, app, client_address, query):
    url = f"/api/v1/fibonacci/?{query}&t={secrets.token_hex(4)}"
    replies = [edge.get(url, source=client_address) for _ in range(2)]

    assert [reply.status for reply in replies] == [400, 400]
    assert [line["cs"] for line in edge_log(edge, client=client_address, count=2)] == [
        "MISS",
        "MISS",
    ]
    assert seen_by_app(app, replies) == [True, True]


def test_conditional_requests_on_a_cached_answer(edge, client_address):
    url = unique_sequence_url()
    first = edge.get(url, source=client_address)
    etag = first.header("ETag")
    not_modified = edge.get(url, source=client_address, headers={"If-None-Match": etag})
    failed = edge.get(url, source=client_address, headers={"If-Match": '"another"'})

    assert not_modified.status == 304
    assert not_modified.body == b""
    assert not_modified.header("ETag") == etag
    assert failed.status == 412
    assert failed.header("Content-Type") == "application/problem+json"
    assert failed.json()["status"] == 412
    assert [line["cs"] for line in edge_log(edge, client=client_address, count=3)][1:] == [
        "HIT",
        "HIT",
    ]


def test_a_client_cannot_claim_to_have_been_counted(edge, app, client_address):
    """nginx passes its own X-Fib-Edge, never the client's; a direct client's is not believed."""
    url = unique_sequence_url()
    counted = {"X-Fib-Edge": "counted"}
    direct = [
        http_request(app.port, url, source=client_address, headers=counted)
        for _ in range(BUDGET + 1)
    ]
    assert [reply.status for reply in direct] == [200] * BUDGET + [429]


# --- The large rule, read by the edge as by the app --------------------------------

SMALL_TABLE = {
    "FIB_MAX_N": "300",
    "FIB_LARGE_N": "40",
    "FIB_MAX_INDEX": "5000",
    "FIB_LARGE_INDEX": "700",
}


def _app_says_large(settings, path: str, query: str) -> bool:
    settings.FIB_MAX_N, settings.FIB_LARGE_N = 300, 40
    settings.FIB_MAX_INDEX, settings.FIB_LARGE_INDEX = 5000, 700
    request = Request(APIRequestFactory().get(f"{path}?{query}"))
    index = path.rstrip("/").split("/")[-1]
    kwargs = {} if index == "fibonacci" else {"index": index}
    return budgets.is_large(request, SimpleNamespace(kwargs=kwargs))  # type: ignore[arg-type]


def test_the_edge_judges_large_requests_exactly_as_the_app(stack_factory, settings):
    (small,) = stack_factory.start_apps(1, **UNLIMITED_ENV, **SMALL_TABLE)
    edge = stack_factory.start_nginx([small], edge=True, **GENEROUS_NGINX)
    limits = budgets.large_counts(300, 40)
    cases = [
        ("/api/v1/fibonacci/", f"n={limits[o] + d}&offset={o}")
        for o in (0, 1, 57, 150, 259, 299)
        for d in (0, 1)
    ]
    cases += [
        ("/api/v1/fibonacci/", query)
        for query in (
            "n=41",
            "n=040",
            "n=0041",
            "n=41&offset=0",
            "n=41&offset=",
            "n=41&n=41",
            "n",
            "n=+41",
            "n=%34%31",
            "n=41&offset=260",
            "n=300",
            "n=301",
            "offset=5",
            "n=%D9%A4%D9%A1",
        )
    ]
    cases += [
        (f"/api/v1/fibonacci/{index}/", "") for index in ("700", "701", "0701", "5001", "abc")
    ]

    mismatches = []
    client = new_client_address()
    for path, query in cases:
        reply = edge.get(path + ("?" + query if query else ""), source=client)
        assert reply.status in {200, 400, 404}, (path, query, reply.status)
        edge_large = '"large"' in (reply.header("RateLimit-Policy") or "")
        if edge_large != _app_says_large(settings, path, query):
            mismatches.append((path, query, edge_large))
    assert mismatches == []


# --- Counters in shared memory, counters down -----------------------------------------


def test_without_redis_the_edge_counts_in_shared_memory(stack_factory, client_address):
    (local,) = stack_factory.start_apps(1, workers=1, REDIS_URL="", FIB_RATE_LIMIT=f"{BUDGET}/h")
    edge = stack_factory.start_nginx([local], edge=True)
    assert edge.edge is not None
    assert '["store"]="shm"' in edge.edge.policy.read_text()
    url = unique_sequence_url()

    replies = [edge.get(url, source=client_address) for _ in range(BUDGET + 1)]

    assert [reply.status for reply in replies] == [200] * BUDGET + [429]
    assert [remaining(reply)["default"] for reply in replies] == [4, 3, 2, 1, 0, 0]


def _dead_redis_url() -> str:
    from tests.processes import free_port

    return f"redis://127.0.0.1:{free_port()}/0"


def test_redis_down_fails_open_at_the_edge_and_says_so_once(stack_factory, client_address):
    (app,) = stack_factory.start_apps(1, REDIS_URL=_dead_redis_url(), FIB_RATE_LIMIT="2/h")
    edge = stack_factory.start_nginx([app], edge=True)
    url = unique_sequence_url()

    replies = [edge.get(url, source=client_address) for _ in range(6)]

    assert [reply.status for reply in replies] == [200] * 6
    assert all(reply.header("RateLimit") is None for reply in replies)
    errors = (edge.layout.prefix / "error.log").read_text()
    assert errors.count("rate-limit counters unavailable") == 1
    assert "not limiting for 5" in errors


def test_redis_down_fails_closed_at_the_edge_when_set_to(stack_factory, client_address):
    (app,) = stack_factory.start_apps(
        1, REDIS_URL=_dead_redis_url(), FIB_RATE_LIMIT_FAIL_CLOSED="true"
    )
    edge = stack_factory.start_nginx([app], edge=True)

    replies = [edge.get(unique_sequence_url(), source=client_address) for _ in range(3)]

    assert [reply.status for reply in replies] == [503] * 3
    assert replies[0].header("Retry-After") == "5"
    assert replies[0].header("Content-Type") == "application/problem+json"
    assert replies[0].json()["title"] == "Service Unavailable"
    errors = (edge.layout.prefix / "error.log").read_text()
    assert errors.count("rate-limit counters unavailable") == 1
    assert "refusing requests" in errors
    assert seen_by_app(app, replies) == [False] * 3


# --- Counting in Redis: many at once, logins, a lost script ------------------------------


def test_concurrent_requests_are_each_counted_once_in_shared_round_trips(
    stack_factory, private_redis, client_address, settings
):
    quota, sent = 30, 48
    (app,) = stack_factory.start_apps(
        1, REDIS_URL=private_redis.url(db=2), FIB_RATE_LIMIT=f"{quota}/h"
    )
    edge: NginxInstance = stack_factory.start_nginx([app], edge=True, **GENEROUS_NGINX)
    url = unique_sequence_url()
    assert edge.get(url, source=client_address).status == 200  # now cached
    round_trips_before = private_redis.calls("evalsha")
    start = threading.Barrier(sent)

    def one_request(_: int) -> Reply:
        start.wait()
        return edge.get(url, source=client_address)

    with ThreadPoolExecutor(sent) as pool:
        replies = list(pool.map(one_request, range(sent)))

    statuses = [reply.status for reply in replies]
    assert (statuses.count(200), statuses.count(429)) == (quota - 1, sent - quota + 1)
    # Each answer carries its own count: what is left runs from quota - 2 to 0, once each.
    left = sorted(remaining(reply)["default"] for reply in replies if reply.status == 200)
    assert left == list(range(quota - 1))
    with private_redis.client(db=2) as counters:
        assert counters.get(default_counter(app, client_address, quota, settings)) == b"49"
    # Requests that arrived together were counted together (48 over 2 workers).
    assert private_redis.calls("evalsha") - round_trips_before < sent


def test_two_clients_in_step_are_each_answered_with_their_own_count(stack_factory, client_address):
    # Two clients that keep sending (a connection per request): in nginx's two
    # workers (2 cores) their requests keep meeting, one waiting alone while
    # the other's is counted.
    quota, per_thread = 100, 40
    (app,) = stack_factory.start_apps(1, FIB_RATE_LIMIT=f"{quota}/h")
    edge: NginxInstance = stack_factory.start_nginx([app], edge=True, **GENEROUS_NGINX)
    url = unique_sequence_url()
    assert edge.get(url, source=client_address).status == 200

    def keep_sending(_: int) -> list[Reply]:
        return [edge.get(url, source=client_address) for _ in range(per_thread)]

    with ThreadPoolExecutor(2) as pool:
        replies = [reply for replies in pool.map(keep_sending, range(2)) for reply in replies]

    assert [reply.status for reply in replies] == [200] * 2 * per_thread
    left = sorted(remaining(reply)["default"] for reply in replies)
    assert left == list(range(quota - 1 - 2 * per_thread, quota - 1))
    assert "runtime error" not in (edge.layout.prefix / "error.log").read_text()


@pytest.mark.parametrize("login", ["password", "acl user"])
def test_the_edge_logs_in_to_redis_and_reloads_a_lost_script(
    stack_factory, private_redis, client_address, settings, login
):
    credentials = None  # the server's password
    if login == "acl user":
        with private_redis.client() as admin:
            admin.acl_setuser(
                "fib", enabled=True, passwords=["+user-secret"], keys=["*"], commands=["+@all"]
            )
        credentials = "fib:user-secret"
    redis_url = private_redis.url(db=3, credentials=credentials)
    (app,) = stack_factory.start_apps(1, REDIS_URL=redis_url, FIB_RATE_LIMIT=f"{BUDGET}/h")
    edge = stack_factory.start_nginx([app], edge=True)
    url = unique_sequence_url()

    before = [edge.get(url, source=client_address) for _ in range(3)]
    evals_before = private_redis.calls("eval")
    with private_redis.client(db=3) as counters:
        counters.script_flush()  # EVALSHA now finds no script, as after a SCRIPT FLUSH
        after = [edge.get(url, source=client_address) for _ in range(BUDGET - 1)]
        counter = counters.get(default_counter(app, client_address, BUDGET, settings))

    assert [reply.status for reply in before + after] == [200] * BUDGET + [429] * 2
    assert [remaining(reply)["default"] for reply in before + after] == [4, 3, 2, 1, 0, 0, 0]
    assert counter == b"7"
    assert private_redis.calls("eval") > evals_before  # the edge sent the script again
    assert "rate-limit counters unavailable" not in (edge.layout.prefix / "error.log").read_text()


# --- Releases and reloads --------------------------------------------------------------


def test_a_new_representation_version_is_never_served_old_bytes(stack_factory, client_address):
    (app,) = stack_factory.start_apps(1, **UNLIMITED_ENV)
    edge = stack_factory.start_nginx([app], edge=True, **GENEROUS_NGINX)
    assert edge.edge is not None
    url = unique_sequence_url()
    edge.get(url, source=client_address)
    edge.get(url, source=client_address)
    policy = edge.edge.policy.read_text()
    assert '["representation_version"]="1"' in policy
    edge.edge.policy.write_text(
        policy.replace('["representation_version"]="1"', '["representation_version"]="next"')
    )
    edge.process.send_signal(signal.SIGHUP)
    time.sleep(1.5)

    edge.get(url, source=client_address)

    assert [line["cs"] for line in edge_log(edge, client=client_address, count=3)] == [
        "MISS",
        "HIT",
        "MISS",
    ]


def test_nginx_reload_under_load_loses_no_request(stack_factory, client_address):
    (app,) = stack_factory.start_apps(1, **UNLIMITED_ENV, FIB_EDGE_LOG_EACH_PER_MINUTE="1000000")
    edge = stack_factory.start_nginx([app], edge=True, **GENEROUS_NGINX)
    # A connection per request: nginx's old workers close idle keep-alive
    # connections when they leave, a race any client must retry (RFC 9112, 9.3.1).
    with LoadGenerator(
        port=edge.port, path=unique_sequence_url(), source=client_address, keepalive=False
    ) as load:
        load.wait_for(200)
        for _ in range(3):
            edge.process.send_signal(signal.SIGHUP)
            load.wait_for(len(load.results) + 200)
    results = load.results

    assert {result.status for result in results} == {200}, [
        r.error for r in results if r.status != 200
    ][:3]
    logged = {line["id"] for line in edge_log(edge, client=client_address, count=len(results))}
    assert {result.request_id for result in results} <= logged


# --- What the edge log records in aggregate ----------------------------------------------


def edge_aggregates(edge: NginxInstance, *, client: str) -> list[dict[str, Any]]:
    """The edge log's aggregate lines of one client."""
    assert edge.edge is not None
    lines = [json.loads(line) for line in _edge_log_text(edge).splitlines()]
    return [line for line in lines if line.get("k") == "a" and line["c"] == client]


def reload_and_wait_for_aggregates(edge: NginxInstance, *, client: str) -> list[dict[str, Any]]:
    """Reload nginx: its old workers write what they counted as they leave."""
    edge.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while not (found := edge_aggregates(edge, client=client)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


def test_requests_past_the_logged_rate_are_one_aggregate(stack_factory, client_address):
    (app,) = stack_factory.start_apps(1, **UNLIMITED_ENV, FIB_EDGE_LOG_EACH_PER_MINUTE="5")
    edge = stack_factory.start_nginx([app], edge=True, **GENEROUS_NGINX)
    url = unique_sequence_url()
    replies = [edge.get(url, source=client_address) for _ in range(8)]

    assert [reply.status for reply in replies] == [200] * 8
    lines = edge_log(edge, client=client_address, count=5)
    aggregates = reload_and_wait_for_aggregates(edge, client=client_address)
    assert [line["id"] for line in lines] == [r.header("X-Request-ID") for r in replies[:5]]
    assert [(a["why"], a["s"], a["n"]) for a in aggregates] == [("over_rate", 200, 3)]
    assert aggregates[0]["minute"] % 60 == 0


def test_the_shields_refusals_are_one_aggregate_not_a_line_each(stack_factory, client_address):
    (app,) = stack_factory.start_apps(1, **UNLIMITED_ENV)
    edge = stack_factory.start_nginx(
        [app], edge=True, limit_req_rate="1r/m", limit_req_burst=2, limit_conn=50
    )
    url = unique_sequence_url()
    replies = [edge.get(url, source=client_address) for _ in range(10)]

    assert [reply.status for reply in replies] == [200] * 3 + [429] * 7
    assert all(reply.header("RateLimit") is None for reply in replies[3:]), "the shield's own"
    assert replies[-1].json()["title"] == "Too Many Requests"
    assert len(edge_log(edge, client=client_address, count=3)) == 3
    aggregates = reload_and_wait_for_aggregates(edge, client=client_address)
    assert [(a["why"], a["s"], a["n"]) for a in aggregates] == [("shield", 429, 7)]
    assert len(edge_log(edge, client=client_address)) == 3


# --- A proxy in front of nginx -----------------------------------------------------------


def test_behind_a_trusted_proxy_the_edge_counts_the_client_it_names(stack_factory):
    (app,) = stack_factory.start_apps(1, FIB_RATE_LIMIT="3/h")
    edge = stack_factory.start_nginx([app], edge=True, trusted_proxies=["127.0.0.1"])
    url = unique_sequence_url()
    named, spoofer = new_client_address(), new_client_address()

    # 127.0.0.1 stands for the load balancer: its X-Real-IP is the client.
    through_proxy = [
        edge.get(url, source="127.0.0.1", headers={"X-Real-IP": named}) for _ in range(4)
    ]
    # Anyone else's X-Real-IP is ignored: the spoofer spends its own budget.
    spoofed = edge.get(url, source=spoofer, headers={"X-Real-IP": named})

    assert [reply.status for reply in through_proxy] == [200] * 3 + [429]
    assert spoofed.status == 200 and remaining(spoofed) == {"default": 2}
    assert [line["c"] for line in edge_log(edge, client=named, count=4)] == [named] * 4
    assert len(edge_log(edge, client=spoofer, count=1)) == 1


# --- Found in review: requests that used to cross or escape ------------------------------


def test_two_accept_headers_cannot_store_one_representation_under_anothers_key(edge):
    """nginx keys on a client's first Accept and passes only that one to the app."""
    url = unique_sequence_url()
    attacker, victim = new_client_address(), new_client_address()
    raw = raw_exchange(
        edge.port,
        f"GET {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\n"
        "Accept: application/json\r\nConnection: close\r\n\r\n".encode(),
        source=attacker,
    )
    assert raw is not None and raw.status == 200

    reply = edge.get(url, source=victim, headers={"Accept": "text/plain"})

    assert reply.header("Content-Type") == "text/plain; charset=utf-8"
    assert edge_log(edge, client=victim, count=1)[0]["cs"] == "HIT"


def test_ipv4_mapped_clients_behind_a_proxy_spend_their_own_ipv4_budget(stack_factory):
    (app,) = stack_factory.start_apps(1, FIB_RATE_LIMIT="1/h")
    edge = stack_factory.start_nginx([app], edge=True, trusted_proxies=["127.0.0.1"])
    url = unique_sequence_url()

    replies = [
        edge.get(url, source="127.0.0.1", headers={"X-Real-IP": f"::ffff:{address}"})
        for address in (new_client_address(), new_client_address())
    ]

    # Two clients, a budget of one each (as fibonacci.addresses reads a mapped address).
    assert [reply.status for reply in replies] == [200, 200]


def test_the_edges_412_has_the_apps_headers(edge, client_address):
    url = unique_sequence_url()
    edge.get(url, source=client_address)
    failed = edge.get(url, source=client_address, headers={"If-Match": '"another"'})

    assert failed.status == 412
    assert failed.header("X-Request-ID") == edge_log(edge, client=client_address, count=2)[1]["id"]
    assert remaining(failed) == {"default": BUDGET - 2}
    assert failed.header("RateLimit-Policy") == f'"default";q={BUDGET};w=3600'
    assert failed.header("X-Frame-Options") == "DENY"


def test_requests_past_the_logged_rate_ending_in_an_error_page_are_counted(
    stack_factory, client_address
):
    (app,) = stack_factory.start_apps(1, **UNLIMITED_ENV, FIB_EDGE_LOG_EACH_PER_MINUTE="2")
    edge = stack_factory.start_nginx([app], edge=True, **GENEROUS_NGINX)
    url = unique_sequence_url()
    edge.get(url, source=client_address)
    edge.get(url, source=client_address)
    failed = [
        edge.get(url, source=client_address, headers={"If-Match": '"x"'}).status for _ in range(3)
    ]

    assert failed == [412] * 3
    aggregates = reload_and_wait_for_aggregates(edge, client=client_address)
    assert [(a["why"], a["s"], a["n"]) for a in aggregates] == [("over_rate", 412, 3)]


def test_a_request_nginx_cannot_read_is_in_the_edge_log(edge):
    source = new_client_address()
    reply = raw_exchange(edge.port, b"GARBAGE\r\n\r\n", source=source)
    assert reply is not None and reply.status == 400

    lines = edge_log(edge, client=source, count=1)
    assert [(line["s"], line["u"]) for line in lines] == [("400", "")]


def _gunicorn_output(factory, app) -> str:
    path = factory.workdir / f"gunicorn-{app.port}.out"
    return path.read_text() if path.exists() else ""


def test_a_stale_policy_at_the_edge_is_reported_by_the_app(stack_factory, client_address):
    (app,) = stack_factory.start_apps(1, **UNLIMITED_ENV)
    edge = stack_factory.start_nginx([app], edge=True, **GENEROUS_NGINX)
    assert edge.edge is not None
    edge.get(unique_sequence_url(), source=client_address)  # a miss: the app sees the mark
    time.sleep(0.5)
    assert "is not this app's" not in _gunicorn_output(stack_factory, app)

    policy = edge.edge.policy.read_text()
    stale = re.sub(r'\["fingerprint"\]="[0-9a-f]+"', '["fingerprint"]="0000000000000000"', policy)
    assert stale != policy
    edge.edge.policy.write_text(stale)
    edge.process.send_signal(signal.SIGHUP)
    time.sleep(1.5)
    edge.get(unique_sequence_url(), source=client_address)

    deadline = time.monotonic() + 5
    while "is not this app's" not in (output := _gunicorn_output(stack_factory, app)):
        assert time.monotonic() < deadline, output[-2000:]
        time.sleep(0.1)
    assert "the edge's policy (0000000000000000)" in output
