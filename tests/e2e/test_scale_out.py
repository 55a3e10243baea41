"""Two gunicorn instances behind one nginx, sharing one Redis and one PostgreSQL.

The instances stand for two machines: each has its own processes and port,
and they share nothing but the Redis counters and the database.
"""

from __future__ import annotations

import time

from .conftest import GENEROUS_NGINX, UNLIMITED_ENV, LoadGenerator, wait_for_log

LARGE_BUDGET = 10
WORKERS_PER_INSTANCE = 2


def test_one_rate_limit_budget_and_one_request_log_across_both_instances(
    stack_factory, e2e_database_url, client_address
):
    apps = stack_factory.start_apps(
        2,
        workers=WORKERS_PER_INSTANCE,
        FIB_RATE_LIMIT="1000/m",
        FIB_RATE_LIMIT_LARGE=f"{LARGE_BUDGET}/h",
        FIB_LARGE_N="100",
    )
    nginx = stack_factory.start_nginx(apps)

    replies = [
        nginx.get("/api/v1/fibonacci/?n=200", source=client_address)
        for _ in range(LARGE_BUDGET + 4)
    ]

    assert [reply.status for reply in replies] == [200] * LARGE_BUDGET + [429] * 4
    served_by = nginx.upstreams_for(client_address)
    assert set(served_by) == {app.address for app in apps}, "nginx spread them over both"
    assert set(served_by[LARGE_BUDGET:]) == {app.address for app in apps}, (
        "both instances refuse once the shared budget is spent"
    )
    request_ids = {reply.header("X-Request-ID") for reply in replies}
    rows = wait_for_log(
        e2e_database_url, client_ip=client_address, done=lambda rows: len(rows) >= len(replies)
    )
    assert {row[0] for row in rows} == request_ids, "one table holds both instances' records"
    assert sorted(row[2] for row in rows) == [200] * LARGE_BUDGET + [429] * 4


def test_sigkill_of_one_instance_under_load_fails_over_without_errors(
    stack_factory, client_address
):
    apps = stack_factory.start_apps(2, workers=WORKERS_PER_INSTANCE, **UNLIMITED_ENV)
    nginx = stack_factory.start_nginx(apps, **GENEROUS_NGINX)
    victim, survivor = apps

    with LoadGenerator(
        port=nginx.port, path="/api/v1/fibonacci/?n=100", source=client_address, max_seconds=20
    ) as load:
        load.wait_for(200)
        victim.kill_instance()
        killed_at = len(load.results)
        load.wait_for(killed_at + 500)
        results = load.stop()

    failures = [result for result in results if result.status == 0]
    server_errors = [result for result in results if result.status >= 500]
    print(
        f"SIGKILL under load: {len(results)} requests, killed after {killed_at}, "
        f"{len(server_errors)} 5xx, {len(failures)} cut short"
    )
    # Only requests in flight on the killed instance's workers may fail: a 5xx,
    # or an answer cut short when the worker died after nginx had passed its
    # headers on. Whatever had not reached the client yet, nginx retried.
    assert len(server_errors) + len(failures) <= WORKERS_PER_INSTANCE, server_errors + failures
    assert {result.status for result in results} <= {0, 200, 502, 503, 504}
    after_kill = nginx.upstreams_for(client_address)[killed_at + 50 :]
    assert after_kill and set(after_kill) <= {
        survivor.address,
        f"{victim.address}, {survivor.address}",
    }
    assert survivor.process.poll() is None


def test_killed_instance_is_used_again_once_it_is_back(stack_factory, client_address):
    apps = stack_factory.start_apps(2, workers=1, **UNLIMITED_ENV)
    nginx = stack_factory.start_nginx(apps, **GENEROUS_NGINX)
    victim = apps[0]
    victim.kill_instance()
    statuses = [nginx.get("/healthz", source=client_address).status for _ in range(20)]
    assert statuses == [200] * 20
    (revived,) = stack_factory.start_apps(1, workers=1, ports=[victim.port], **UNLIMITED_ENV)

    # nginx tries a failed server again after fail_timeout (5 s in deploy/nginx.py).
    def served_through_nginx():
        return [
            entry for entry in revived.access_log_entries() if entry["x_real_ip"] == client_address
        ]

    deadline = time.monotonic() + 15
    while not served_through_nginx() and time.monotonic() < deadline:
        assert nginx.get("/healthz", source=client_address).status == 200
        time.sleep(0.2)
    assert served_through_nginx(), "nginx went back to the revived instance"
