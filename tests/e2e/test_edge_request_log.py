"""Every request through the edge in the request log, once: hits, misses and refusals alike.

Real nginx with the edge, gunicorn, the shipper (`manage.py ship_edge_log`)
and a PostgreSQL cluster of the test's own, which is stopped for a while; on
the way nginx is reloaded, its log rotated and the shipper restarted.
"""

from __future__ import annotations

import os
import signal
import time

import psycopg

from deploy import nginx, processes
from tests.processes import service_environment

from . import test_request_log_faults as faults
from .conftest import GENEROUS_NGINX, NginxInstance

# The private PostgreSQL cluster and its fresh database, as the fault tests use them.
private_postgres = faults.private_postgres
log_database = faults.log_database

# The budget: small enough that some requests are refused (429s are logged too).
BUDGET = 40


def _send(edge: NginxInstance, source: str, count: int, answered: dict[str, int]) -> None:
    """count requests over three URLs (so hits and misses), each answer's id kept."""
    for number in range(count):
        reply = edge.get(f"/api/v1/fibonacci/?n={3 + number % 3}", source=source)
        request_id = reply.header("X-Request-ID")
        assert request_id, reply.status
        answered[request_id] = reply.status


def _cache_column(url: str) -> dict[str, str]:
    with psycopg.connect(url) as db:
        return dict(db.execute("SELECT request_id, cache FROM fibonacci_requestlog").fetchall())


def test_every_request_arrives_once_across_reload_rotation_restart_and_outage(
    stack_factory,
    private_postgres,
    log_database,
    client_address,
):
    database_url, stored = log_database
    processes.manage(
        "migrate",
        "--no-input",
        "--verbosity",
        "0",
        env=service_environment(DATABASE_URL=database_url),
    )
    (app,) = stack_factory.start_apps(
        1, DATABASE_URL=database_url, FIB_RATE_LIMIT=f"{BUDGET}/h", FIB_RATE_LIMIT_LARGE="10/h"
    )
    edge = stack_factory.start_nginx([app], edge=True, ship=False, **GENEROUS_NGINX)
    assert edge.edge is not None
    log = edge.edge.log
    shipper_output = stack_factory.workdir / "shipper.out"

    def start_shipper():
        return processes.start_edge_log_shipper(log, env=app.env, log_path=shipper_output)

    shipper = start_shipper()
    answered: dict[str, int] = {}
    try:
        _send(edge, client_address, 10, answered)

        edge.process.send_signal(signal.SIGHUP)  # reload
        time.sleep(1)
        _send(edge, client_address, 10, answered)

        os.rename(log, f"{log}.1")  # logrotate: move, create, reopen
        nginx.prepare_edge_files(edge.edge)
        edge.process.send_signal(signal.SIGUSR1)
        time.sleep(0.5)
        _send(edge, client_address, 10, answered)

        assert processes.stop_process(shipper) == 0  # a restart of the shipper
        _send(edge, client_address, 5, answered)
        shipper = start_shipper()
        _send(edge, client_address, 5, answered)

        private_postgres.stop()  # the database goes away: the records wait
        _send(edge, client_address, 10, answered)
        private_postgres.start()
        _send(edge, client_address, 10, answered)

        rows = faults._wait_for_rows(stored, set(answered), within_seconds=90)
    finally:
        processes.stop_process(shipper)

    order = list(answered)
    missing = sorted(order.index(rid) for rid in set(answered) - set(rows))
    assert not missing, f"requests {missing} have no row; the shipper said:\n" + (
        shipper_output.read_text()[-3000:] if shipper_output.exists() else "nothing"
    )
    faults._assert_each_once(rows, set(answered))
    assert sorted(set(answered.values())) == [200, 429]
    caches = _cache_column(database_url)
    statuses_by_cache = {
        cache: {answered[rid] for rid, outcome in caches.items() if outcome == cache}
        for cache in set(caches.values())
    }
    assert statuses_by_cache == {"miss": {200}, "hit": {200}, "": {429}}, statuses_by_cache
