"""`make stack` (python -m deploy stack): serves through nginx, and SIGTERM stops all it started."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

from tests.processes import PROJECT_DIR, free_port

from .conftest import http_request

SERVING = re.compile(rb"nginx pid (\d+), gunicorn pid (\d+)")
PREFIX = re.compile(rb"stack: prefix (\S+)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


def test_stack_serves_through_nginx_and_stops_everything_it_started(
    e2e_programs, e2e_database_url, e2e_redis, e2e_workdir
):
    redis_url, key_prefix = e2e_redis
    port, app_port, metrics_port = free_port(), free_port(), free_port()
    output = e2e_workdir / f"stack-{port}.out"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "FIB_", "GUNICORN_"))
    } | {
        "DATABASE_URL": e2e_database_url,
        "REDIS_URL": redis_url,
        "FIB_CACHE_KEY_PREFIX": key_prefix,
        "GUNICORN_WORKERS": "2",
    }
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [
                *[sys.executable, "-m", "deploy", "stack"],
                *["--port", str(port), "--app-port", str(app_port)],
                *["--edge-metrics-port", str(metrics_port)],
            ],
            cwd=PROJECT_DIR,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pids: list[int] = []
    try:
        # Ready when the launcher says so: it prints the pids once nginx answers.
        deadline = time.monotonic() + 90
        while not (started := SERVING.search(output.read_bytes())):
            assert process.poll() is None, output.read_text()
            assert time.monotonic() < deadline, output.read_text()
            time.sleep(0.1)
        pids = [int(pid) for pid in started.groups()]
        prefix_line = PREFIX.search(output.read_bytes())
        assert prefix_line, output.read_text()
        prefix = prefix_line.group(1).decode()

        reply = http_request(port, "/api/v1/fibonacci/?n=5")
        assert reply.status == 200 and reply.json()["sequence"] == [0, 1, 1, 2, 3]
        assert reply.header("Server") == "nginx"
        assert http_request(port, "/static/admin/css/base.css").status == 200
        # The edge's metrics, from its log shipper, on the port the stack printed.
        assert f"edge metrics on http://127.0.0.1:{metrics_port}/metrics".encode() in (
            output.read_bytes()
        )
        metrics = http_request(metrics_port, "/metrics")
        assert metrics.status == 200 and b"fib_edge_log_shipped_total" in metrics.body

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, output.read_text()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            for pid in pids:  # what the launcher could not stop itself
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)

    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in pids), "nginx and gunicorn are gone"
    assert not os.path.exists(prefix), "the temporary prefix is removed"
    assert b"stack: stopped" in output.read_bytes()
