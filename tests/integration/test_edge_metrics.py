"""The edge's metrics as the edge log shipper counts them from committed lines.

In-process against the test database (both passes), lines written as nginx
writes them (tests/edge_log_lines.py). The shipper as a process, behind a real
nginx and read through a real Prometheus: tests/e2e/test_edge_metrics.py.
"""

from __future__ import annotations

import subprocess
import urllib.request
from pathlib import Path

import pytest
from django.db import OperationalError
from prometheus_client import generate_latest

from deploy import processes
from requestlog import shipper as shipper_module
from requestlog.edge_metrics import EdgeMetrics
from requestlog.shipper import EdgeLogShipper
from tests.conftest import require_program
from tests.edge_log_lines import FakeClock, aggregate_line, request_line, ship_all

pytestmark = pytest.mark.django_db


@pytest.fixture
def metrics() -> EdgeMetrics:
    return EdgeMetrics()


def _shipper(path: Path, metrics: EdgeMetrics, **options) -> EdgeLogShipper:
    return EdgeLogShipper(str(path), clock=FakeClock(), metrics=metrics, **options)


def _value(metrics: EdgeMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def _requests(metrics: EdgeMetrics, status: str, cache: str) -> float | None:
    return _value(metrics, "fib_edge_requests_total", status=status, cache=cache)


def _decision(metrics: EdgeMetrics, decision: str) -> float | None:
    return _value(metrics, "fib_edge_limiter_decisions_total", decision=decision)


def test_requests_are_counted_by_status_cache_and_limiter_decision(nginx_log, log_path, metrics):
    nginx_log.write(
        *[request_line(cache_status="HIT") for _ in range(3)],
        request_line(cache_status="STALE"),
        request_line(cache_status="MISS"),
        request_line(cache_status="EXPIRED"),
        request_line(cache_status="BYPASS"),
        request_line(status=429, cache_status="", limit="default"),
        request_line(status=429, cache_status="", limit="large"),
        request_line(status=200, cache_status="MISS", limit="fail_open"),
        request_line(status=503, cache_status="", limit="fail_closed"),
        request_line(status=400, uri="", method="", cache_status=""),
        request_line(status=1000, cache_status="MISS"),  # not an HTTP status: one bounded value
        request_line(status=200, cache_status="MISS", limit="something new"),
    )
    assert ship_all(_shipper(log_path, metrics)) == 14

    assert _requests(metrics, "200", "hit") == 4
    assert _requests(metrics, "200", "miss") == 4  # MISS, EXPIRED, fail_open, the new "l"
    assert _requests(metrics, "200", "bypass") == 1
    assert _requests(metrics, "429", "") == 2
    assert _requests(metrics, "503", "") == 1
    assert _requests(metrics, "400", "") == 1
    assert _requests(metrics, "other", "miss") == 1
    assert _decision(metrics, "allowed") == 9
    assert _decision(metrics, "refused_default") == 1
    assert _decision(metrics, "refused_large") == 1
    assert _decision(metrics, "fail_open") == 1
    assert _decision(metrics, "fail_closed") == 1
    assert _decision(metrics, "other") == 1
    assert _decision(metrics, "shield") == 0  # every decision exists from the start
    assert _value(metrics, "fib_edge_counters_unavailable_total") == 2
    assert _value(metrics, "fib_edge_log_shipped_total") == 14
    assert _value(metrics, "fib_edge_log_skipped_total") == 0


def test_aggregate_lines_add_their_count(nginx_log, log_path, metrics):
    nginx_log.write(
        aggregate_line(why="shield", status=429, count=250),
        aggregate_line(why="shield", status=429, count=50, client="198.51.100.1"),
        aggregate_line(why="over_rate", status=200, count=30),
        aggregate_line(why="over_rate", status=429, count=7),
        request_line(cache_status="HIT"),
    )
    assert ship_all(_shipper(log_path, metrics)) == 5

    assert _requests(metrics, "429", "") == 307
    assert _requests(metrics, "200", "") == 30
    assert _requests(metrics, "200", "hit") == 1
    assert _decision(metrics, "shield") == 300
    assert _decision(metrics, "over_rate") == 37
    assert _decision(metrics, "allowed") == 1
    # Lines, not requests.
    assert _value(metrics, "fib_edge_log_shipped_total") == 5


def test_malformed_lines_are_skipped_and_count_no_request(nginx_log, log_path, metrics):
    nginx_log.write(
        request_line(),
        b"not json\n",
        b'{"k":"r","id":"x"}\n',
        b'{"k":"z"}\n',
        request_line(status=404, cache_status=""),
    )
    assert ship_all(_shipper(log_path, metrics)) == 5

    assert _value(metrics, "fib_edge_log_shipped_total") == 2
    assert _value(metrics, "fib_edge_log_skipped_total") == 3
    assert _requests(metrics, "200", "miss") == 1
    assert _requests(metrics, "404", "") == 1
    total = sum(
        sample.value
        for family in metrics.registry.collect()
        if family.name == "fib_edge_requests"
        for sample in family.samples
        if sample.name == "fib_edge_requests_total"
    )
    assert total == 2


def test_a_batch_is_counted_only_once_it_is_committed(monkeypatch, nginx_log, log_path, metrics):
    nginx_log.write(*[request_line(cache_status="HIT") for _ in range(4)])
    shipper = _shipper(log_path, metrics)

    def database_down(*args, **kwargs):
        raise OperationalError("the database went away")

    with monkeypatch.context() as patched:
        patched.setattr(shipper_module, "insert_rows", database_down)
        with pytest.raises(OperationalError):
            shipper.ship_available()
    assert _requests(metrics, "200", "hit") is None
    assert _value(metrics, "fib_edge_log_shipped_total") == 0
    assert _value(metrics, "fib_edge_log_last_shipped_timestamp_seconds") == 0

    assert ship_all(shipper) == 4
    assert _requests(metrics, "200", "hit") == 4
    assert _value(metrics, "fib_edge_log_shipped_total") == 4
    assert (_value(metrics, "fib_edge_log_last_shipped_timestamp_seconds") or 0) > 0

    # A restarted shipper (new counters, as a new process has) counts only what is new.
    restarted = EdgeMetrics()
    nginx_log.write(request_line(cache_status="HIT"))
    assert ship_all(_shipper(log_path, restarted)) == 1
    assert _requests(restarted, "200", "hit") == 1


def test_the_lag_is_the_bytes_not_yet_committed(nginx_log, log_path, metrics):
    lines = [request_line() for _ in range(3)]
    partial = request_line()[:20]
    nginx_log.write(*lines, partial)
    shipper = _shipper(log_path, metrics, batch_lines=2)
    # Before the position is read: every byte there is.
    assert _value(metrics, "fib_edge_log_lag_bytes") == sum(map(len, lines)) + len(partial)

    assert shipper.ship_available() == 2
    assert _value(metrics, "fib_edge_log_lag_bytes") == len(lines[2]) + len(partial)
    assert ship_all(shipper) == 1
    # A line nginx has not finished is behind too.
    assert _value(metrics, "fib_edge_log_lag_bytes") == len(partial)


def test_the_lag_after_a_rotation_counts_the_new_file(nginx_log, log_path, metrics):
    nginx_log.write(request_line())
    shipper = _shipper(log_path, metrics)
    assert ship_all(shipper) == 1
    late = request_line()
    nginx_log.write(late)
    log_path.rename(str(log_path) + ".1")
    nginx_log.reopen()
    first_new = request_line()
    nginx_log.write(first_new)
    assert _value(metrics, "fib_edge_log_lag_bytes") == len(late) + len(first_new)


def test_the_served_exposition_passes_promtool(nginx_log, log_path, metrics):
    nginx_log.write(
        request_line(cache_status="HIT"),
        request_line(status=429, cache_status="", limit="default"),
        aggregate_line(why="shield", count=3),
        b"garbage\n",
    )
    ship_all(_shipper(log_path, metrics))
    port = processes.free_port()
    stop = metrics.serve(port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            exposition = reply.read()
    finally:
        stop()
    assert exposition == generate_latest(metrics.registry)
    promtool = require_program("promtool")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=exposition, capture_output=True, check=False
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    text = exposition.decode()
    assert 'fib_edge_requests_total{cache="hit",status="200"} 1.0' in text
    assert 'fib_edge_limiter_decisions_total{decision="shield"} 3.0' in text
    assert "fib_edge_log_skipped_total 1.0" in text
    # No address, path or query in any label.
    assert "203.0.113.7" not in text and "/api/" not in text
