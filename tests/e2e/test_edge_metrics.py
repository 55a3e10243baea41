"""The edge's metrics, counted by the edge log shipper, read back through a real Prometheus.

Real nginx with the edge in front of gunicorn, its shipper serving the edge's
metrics (`ship_edge_log --metrics-port`), and a Prometheus server on loopback
scraping it every second. After a known number of hits, misses and 429s the
counters are read through Prometheus's query API.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy import processes
from tests.conftest import require_program

from . import test_metrics_prometheus as app_metrics
from .conftest import GENEROUS_NGINX, NginxInstance, StackFactory

BUDGET = 20
URLS = [f"/api/v1/fibonacci/?n={n}" for n in (3, 4, 5)]


def _start_prometheus(directory: Path, target: str) -> tuple[subprocess.Popen[bytes], str]:
    """A Prometheus server on loopback scraping target every second, and its base URL."""
    binary = require_program("prometheus")
    port = processes.free_port()
    config = directory / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: fibonacci-edge\n    metrics_path: /metrics\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    process = processes.start_process(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        log_path=directory / "prometheus.out",
        cwd=directory,
    )
    return process, f"http://127.0.0.1:{port}"


@pytest.fixture
def edge(stack_factory: StackFactory) -> NginxInstance:
    """nginx with the edge, a budget of BUDGET an hour, and its shipper serving metrics."""
    (app,) = stack_factory.start_apps(1, FIB_RATE_LIMIT=f"{BUDGET}/h")
    instance = stack_factory.start_nginx([app], edge=True, shipper_metrics=True, **GENEROUS_NGINX)
    assert instance.shipper_metrics_port is not None
    return instance


@pytest.fixture
def prometheus(tmp_path: Path, edge: NginxInstance) -> Iterator[str]:
    """A Prometheus scraping the edge's shipper every second; yields its base URL."""
    process, base_url = _start_prometheus(tmp_path, f"127.0.0.1:{edge.shipper_metrics_port}")
    try:
        processes.wait_until_ready(f"{base_url}/-/ready", process=process, timeout_seconds=30)
        yield base_url
    finally:
        processes.stop_process(process)


def test_prometheus_reads_back_the_edges_hits_misses_and_refusals(edge, prometheus, client_address):
    statuses = [edge.get(URLS[i % 3], source=client_address).status for i in range(BUDGET + 5)]
    assert statuses == [200] * BUDGET + [429] * 5

    def edge_value(expression: str, expected: float) -> float | None:
        return app_metrics._eventually(prometheus, expression, expected)

    # The first request of each URL is a miss, the others allowed are hits; 429s precede the cache.
    requests = 'sum(fib_edge_requests_total{{job="fibonacci-edge", status="{}", cache="{}"}})'
    assert edge_value(requests.format("200", "miss"), 3) == 3
    assert edge_value(requests.format("200", "hit"), BUDGET - 3) == BUDGET - 3
    assert edge_value(requests.format("429", ""), 5) == 5
    assert app_metrics._query(prometheus, "sum(fib_edge_requests_total)") == BUDGET + 5
    decisions = 'sum(fib_edge_limiter_decisions_total{{decision="{}"}})'
    assert edge_value(decisions.format("allowed"), BUDGET) == BUDGET
    assert edge_value(decisions.format("refused_default"), 5) == 5
    assert app_metrics._query(prometheus, decisions.format("fail_open")) == 0
    assert app_metrics._query(prometheus, "sum(fib_edge_counters_unavailable_total)") == 0
    # The shipping: every line committed, nothing behind, just now.
    assert edge_value("sum(fib_edge_log_shipped_total)", BUDGET + 5) == BUDGET + 5
    assert app_metrics._query(prometheus, "sum(fib_edge_log_skipped_total)") == 0
    assert edge_value("max(fib_edge_log_lag_bytes)", 0) == 0
    age = "time() - max(fib_edge_log_last_shipped_timestamp_seconds)"
    assert 0 <= (app_metrics._query(prometheus, age) or -1) < 120
    assert app_metrics._query(prometheus, 'up{job="fibonacci-edge"}') == 1


def _exposition_with(edge: NginxInstance, *expected: str) -> bytes:
    """The shipper's exposition once it holds every expected line (10 s at most)."""
    metrics_url = f"http://127.0.0.1:{edge.shipper_metrics_port}/metrics"
    deadline = time.monotonic() + 10
    while True:
        with urllib.request.urlopen(metrics_url, timeout=10) as reply:
            exposition: bytes = reply.read()
        lines = exposition.decode().splitlines()
        if all(line in lines for line in expected) or time.monotonic() > deadline:
            return exposition
        time.sleep(0.1)


def test_the_shippers_exposition_passes_promtool(edge, client_address):
    for url in URLS:
        assert edge.get(url, source=client_address).status == 200
    promtool = require_program("promtool")
    expected = 'fib_edge_requests_total{cache="miss",status="200"} 3.0'
    exposition = _exposition_with(edge, expected)
    assert expected in exposition.decode().splitlines(), exposition.decode()
    result = subprocess.run(
        [promtool, "check", "metrics"], input=exposition, capture_output=True, check=False
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    # No address or path in any label.
    assert client_address.encode() not in exposition and b"/api/" not in exposition


def _dead_redis_url() -> str:
    return f"redis://127.0.0.1:{processes.free_port()}/0"


@pytest.mark.parametrize(
    ("fail_closed", "status", "decision"),
    [("false", "200", "fail_open"), ("true", "503", "fail_closed")],
    ids=["open", "closed"],
)
def test_the_edges_counters_down_are_counted_by_decision(
    stack_factory, client_address, fail_closed, status, decision
):
    (app,) = stack_factory.start_apps(
        1, REDIS_URL=_dead_redis_url(), FIB_RATE_LIMIT_FAIL_CLOSED=fail_closed
    )
    edge = stack_factory.start_nginx([app], edge=True, shipper_metrics=True, **GENEROUS_NGINX)
    replies = [edge.get(f"/api/v1/fibonacci/?n={3 + i}", source=client_address) for i in range(4)]
    assert [reply.status for reply in replies] == [int(status)] * 4

    expected = [
        f'fib_edge_limiter_decisions_total{{decision="{decision}"}} 4.0',
        "fib_edge_counters_unavailable_total 4.0",
        'fib_edge_limiter_decisions_total{decision="allowed"} 0.0',
    ]
    lines = _exposition_with(edge, *expected).decode().splitlines()
    assert [line for line in expected if line not in lines] == [], lines
    answered = [line for line in lines if line.startswith("fib_edge_requests_total{")]
    # Failing open the app answers (misses); failing closed the edge's 503 precedes the cache.
    cache = "miss" if decision == "fail_open" else ""
    assert answered == [f'fib_edge_requests_total{{cache="{cache}",status="{status}"}} 4.0']
