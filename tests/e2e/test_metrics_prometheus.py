"""A real Prometheus scrapes a real gunicorn (three workers) and reads back what was served.

gunicorn runs as deployed (deploy/gunicorn.conf.py: multiprocess metrics, JSON
logs) against a PostgreSQL database of this test's own (test_metrics_*) and
Redis database 13; Prometheus runs on loopback with its own configuration and
storage directory, scraping every second. After a known number of requests
the counters are read back through Prometheus's HTTP query API.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from deploy import processes
from tests.conftest import TEST_DATABASE_URL, require_program, require_service
from tests.e2e.conftest import E2E_REDIS_URL

WORKERS = 3
BUDGET = 5
LIST_VIEW = "fibonacci:fibonacci-list"
RESPONSES = "django_http_responses_total_by_status_view_method_total"


@pytest.fixture
def metrics_database() -> Iterator[str]:
    """A migrated PostgreSQL database named test_metrics_*, dropped afterwards."""
    import psycopg

    require_service("PostgreSQL", TEST_DATABASE_URL)
    name = f"test_metrics_{secrets.token_hex(4)}"
    parts = urlsplit(TEST_DATABASE_URL)
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(parts._replace(path=f"/{name}"))
    try:
        processes.manage(
            "migrate",
            "--no-input",
            "--verbosity",
            "0",
            env=processes.service_environment(DATABASE_URL=url),
        )
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def app(tmp_path, metrics_database) -> Iterator[tuple[int, Path]]:
    """(port, access log) of gunicorn with three workers and a budget of BUDGET an hour."""
    require_service("Redis", E2E_REDIS_URL)
    port = processes.free_port()
    access_log = tmp_path / "access.log"
    env = processes.service_environment(
        DATABASE_URL=metrics_database,
        REDIS_URL=E2E_REDIS_URL,
        FIB_CACHE_KEY_PREFIX=f"test-metrics-{secrets.token_hex(4)}",
        # An hourly window: no reset falls among the test's requests.
        FIB_RATE_LIMIT=f"{BUDGET}/h",
        FIB_LOG_FLUSH_MS="200",
        GUNICORN_BIND=f"127.0.0.1:{port}",
        GUNICORN_WORKERS=str(WORKERS),
        GUNICORN_ACCESS_LOG=str(access_log),
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
    )
    # A previous run's counts: the master empties the directory when it starts.
    (tmp_path / "metrics").mkdir()
    leftover = (
        "from prometheus_client import Counter\n"
        f"Counter({RESPONSES[: -len('_total')]!r}, 'x', ['status', 'view', 'method'])"
        f".labels('200', {LIST_VIEW!r}, 'GET').inc(1000)\n"
    )
    subprocess.run([sys.executable, "-c", leftover], env=env, check=True)
    assert list((tmp_path / "metrics").iterdir())
    process = processes.start_gunicorn(env=env, log_path=tmp_path / "gunicorn.out")
    try:
        processes.wait_until_ready(
            f"http://127.0.0.1:{port}/healthz", process=process, timeout_seconds=60
        )
        yield port, access_log
    finally:
        processes.stop_gunicorn(process)


@pytest.fixture
def prometheus(tmp_path, app) -> Iterator[str]:
    """A Prometheus server on loopback scraping the app every second; yields its base URL."""
    binary = require_program("prometheus")
    port = processes.free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: fibonacci-app\n    metrics_path: /metrics\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{app[0]}']\n"
    )
    process = processes.start_process(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        log_path=tmp_path / "prometheus.out",
        cwd=tmp_path,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        processes.wait_until_ready(f"{base_url}/-/ready", process=process, timeout_seconds=30)
        yield base_url
    finally:
        processes.stop_process(process)


def _get(port: int, path: str) -> tuple[int, str | None]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers={"Host": "127.0.0.1"})
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("X-Request-ID")
    finally:
        connection.close()


def _query(base_url: str, expression: str) -> float | None:
    url = f"{base_url}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    result = body["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def _eventually(base_url: str, expression: str, expected: float) -> float | None:
    """The query's value once it equals expected, or its last value after 30 s."""
    deadline = time.monotonic() + 30
    while True:
        value = _query(base_url, expression)
        if value == expected or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


def test_prometheus_reads_back_every_workers_counts(app, prometheus):
    port, access_log = app
    replies = [_get(port, "/api/v1/fibonacci/?n=5") for _ in range(BUDGET + 3)]
    replies += [_get(port, f"/api/v1/no-such-path-{i}") for i in range(2)]
    assert [status for status, _ in replies] == [200] * BUDGET + [429] * 3 + [404] * 2

    def responses(status: str, view: str = LIST_VIEW) -> str:
        return f'sum({RESPONSES}{{job="fibonacci-app", view="{view}", status="{status}"}})'

    # Exactly: the previous run's 1000 are gone.
    assert _eventually(prometheus, responses("200"), BUDGET) == BUDGET
    assert _eventually(prometheus, responses("429"), 3) == 3
    not_found = f'sum({RESPONSES}{{job="fibonacci-app", status="404"}})'
    assert _eventually(prometheus, not_found, 2) == 2
    # Each worker counts itself once: the sum is only right if every worker's file is read.
    assert _eventually(prometheus, "sum(fib_gunicorn_workers)", WORKERS) == WORKERS
    assert _query(prometheus, "max(fib_gunicorn_workers_configured)") == WORKERS
    # The API requests reach the request log: 10 rows written, none dropped.
    assert _eventually(prometheus, "sum(fib_request_log_written_total)", 10) == 10
    assert _query(prometheus, "sum(fib_request_log_dropped_total)") == 0
    assert _query(prometheus, "sum(fib_request_log_buffered)") == 0
    # No label holds a path: the unknown paths are one series.
    series = _query(prometheus, f'count({RESPONSES}{{job="fibonacci-app", status="404"}})')
    assert series == 1
    latency = (
        f'sum(django_http_requests_latency_seconds_by_view_method_count{{view="{LIST_VIEW}"}})'
    )
    assert _query(prometheus, latency) == BUDGET + 3

    # gunicorn's access log: one JSON object per request, with the id the client got.
    lines = [json.loads(line) for line in access_log.read_text().splitlines()]
    api_lines = [line for line in lines if line["path"].startswith("/api/")]
    # (Workers write their lines after answering, so their order may differ.)
    logged = sorted((line["request_id"], line["status"]) for line in api_lines)
    assert logged == sorted((rid, status) for status, rid in replies)


def test_the_exposition_of_several_workers_passes_promtool(app):
    port, _ = app
    for _ in range(6):
        _get(port, "/api/v1/fibonacci/?n=3")
    promtool = require_program("promtool")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        exposition = response.read()
    result = subprocess.run(
        [promtool, "check", "metrics"], input=exposition, capture_output=True, check=False
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert b"fib_gunicorn_workers 3.0" in exposition


def test_recycled_workers_counts_stay_and_their_files_go(tmp_path):
    """Workers replaced every 5 requests: every request still counted, files do not pile up."""
    port = processes.free_port()
    metrics_dir = tmp_path / "metrics"
    env = processes.service_environment(
        DATABASE_URL="sqlite:///:memory:",
        FIB_RATE_LIMIT_ENABLED="false",
        FIB_REQUEST_LOG="false",
        GUNICORN_BIND=f"127.0.0.1:{port}",
        GUNICORN_WORKERS="2",
        GUNICORN_MAX_REQUESTS="5",
        GUNICORN_MAX_REQUESTS_JITTER="0",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
    )
    metrics_dir.mkdir()
    process = processes.start_gunicorn(env=env, log_path=tmp_path / "gunicorn.out")
    try:
        processes.wait_until_ready(
            f"http://127.0.0.1:{port}/healthz", process=process, timeout_seconds=60
        )
        statuses = [_get(port, "/api/v1/fibonacci/?n=3")[0] for _ in range(40)]
        assert statuses == [200] * 40
        deadline = time.monotonic() + 10
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
                exposition = reply.read().decode()
            if f'status="200",view="{LIST_VIEW}"}} 40.0' in exposition:
                break
            assert time.monotonic() < deadline, [
                line for line in exposition.splitlines() if line.startswith(RESPONSES)
            ]
            time.sleep(0.2)
        # At least 8 workers have come and gone; what stays is the live workers' files
        # (counter, histogram, two kinds of live gauge) and one archive per additive kind.
        files = sorted(path.name for path in metrics_dir.iterdir())
        assert "counter_archive.db" in files
        assert len(files) <= 2 * 4 + 2, files
    finally:
        processes.stop_gunicorn(process)
    # The counts end with the instance; a configured directory itself stays.
    assert list(metrics_dir.iterdir()) == []


def test_the_default_metrics_directory_goes_with_the_instance(tmp_path):
    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm: the default directory is elsewhere")
    port = processes.free_port()
    env = processes.service_environment(
        DATABASE_URL="sqlite:///:memory:",
        FIB_RATE_LIMIT_ENABLED="false",
        GUNICORN_BIND=f"127.0.0.1:{port}",
        GUNICORN_WORKERS="2",
    )
    # As docs/configuration.md names it: per user and bind address, in memory.
    directory = Path(f"/dev/shm/fibonacci-metrics-{os.getuid()}-127.0.0.1_{port}")
    process = processes.start_gunicorn(env=env, log_path=tmp_path / "gunicorn.out")
    try:
        processes.wait_until_ready(
            f"http://127.0.0.1:{port}/healthz", process=process, timeout_seconds=60
        )
        assert _get(port, "/api/v1/fibonacci/?n=3")[0] == 200
        assert any(directory.iterdir())
    finally:
        processes.stop_gunicorn(process)
    assert not directory.exists()
