"""A real gunicorn (two sync workers) loses no request log record on SIGHUP reload or SIGTERM.

The server writes to a database this test creates (a SQLite file, or a
dedicated PostgreSQL database when DATABASE_URL names PostgreSQL), and the
flush interval is an hour: every row must come from the shutdown path.
"""

from __future__ import annotations

import http.client
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from deploy import processes
from tests.conftest import require_service
from tests.processes import free_port, service_environment

# Its server writes to the database DATABASE_URL names: the PostgreSQL pass runs it too.
pytestmark = [pytest.mark.e2e, pytest.mark.database, pytest.mark.timeout(120)]

GUNICORN = Path(sys.executable).with_name("gunicorn")


@pytest.fixture
def log_database(tmp_path):
    """(DATABASE_URL for the server, function returning the request ids stored there)."""
    configured = os.environ.get("DATABASE_URL", "")
    if not configured.startswith("postgres"):
        path = tmp_path / "log.sqlite3"

        def stored_sqlite_ids():
            with sqlite3.connect(path) as db:
                return {row[0] for row in db.execute("SELECT request_id FROM fibonacci_requestlog")}

        yield f"sqlite:///{path}", stored_sqlite_ids
        return

    import psycopg

    require_service("PostgreSQL", configured)
    parts = urlsplit(configured)
    name = f"{parts.path.lstrip('/') or 'postgres'}_gunicorn"
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    server_url = urlunsplit(parts._replace(path=f"/{name}"))
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')

    def stored_ids():
        with psycopg.connect(server_url) as db:
            return {row[0] for row in db.execute("SELECT request_id FROM fibonacci_requestlog")}

    yield server_url, stored_ids
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _worker_pids(master_pid):
    return set(processes.worker_pids(master_pid))


def _get(port, path):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response
    finally:
        connection.close()


def _wait_until(condition, *, within_seconds, what):
    deadline = time.monotonic() + within_seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_gunicorn_reload_and_sigterm_write_every_answered_request(log_database, tmp_path):
    database_url, stored_ids = log_database
    env = service_environment(
        DATABASE_URL=database_url,
        FIB_MAX_N="200",
        FIB_RATE_LIMIT_ENABLED="false",
        FIB_LOG_FLUSH_MS="3600000",
        FIB_LOG_BATCH_SIZE="10000",
    )
    processes.manage("migrate", "--no-input", "-v", "0", env=env)
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    server = processes.start_process(
        [str(GUNICORN), "fibproject.wsgi:application", "-b", f"127.0.0.1:{port}", "-w", "2"],
        env=env,
        log_path=log_path,
    )
    try:
        processes.wait_until_ready(f"http://127.0.0.1:{port}/healthz", process=server)
        _wait_until(lambda: len(_worker_pids(server.pid)) == 2, within_seconds=10, what="workers")

        answered = set()
        for n in range(40):
            response = _get(port, f"/api/v1/fibonacci/?n={n}")
            assert response.status == 200
            answered.add(response.getheader("X-Request-ID"))
        assert stored_ids() == set()  # nothing written yet: the interval is an hour

        old_workers = _worker_pids(server.pid)
        os.kill(server.pid, signal.SIGHUP)
        _wait_until(
            lambda: not (old_workers & _worker_pids(server.pid)),
            within_seconds=30,
            what="the old workers to exit",
        )
        assert stored_ids() == answered  # written by the reloaded workers on their way out

        processes.wait_until_ready(f"http://127.0.0.1:{port}/healthz", process=server)
        for n in range(40):
            response = _get(port, f"/api/v1/fibonacci/{n}/")
            assert response.status == 200
            answered.add(response.getheader("X-Request-ID"))
    finally:
        processes.stop_gunicorn(server, graceful_timeout=30)
    log = log_path.read_text(errors="replace")
    assert stored_ids() == answered, log
    assert len(answered) == 80
    assert "could not be written" not in log
