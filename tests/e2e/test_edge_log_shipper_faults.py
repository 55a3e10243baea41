"""`manage.py ship_edge_log` as a process, through a PostgreSQL outage and a SIGKILL restart.

The shipper runs against a PostgreSQL cluster of this module's own (the
private cluster of test_request_log_faults.py, which the tests stop and
start); the edge log is written as nginx writes it (tests/edge_log_lines.py).
Every line written must end up in the table exactly once, by request id.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from deploy import processes
from tests.e2e.test_request_log_faults import PrivatePostgres, private_postgres
from tests.edge_log_lines import EdgeLogFile, request_id_of, request_line
from tests.processes import service_environment

__all__ = ["private_postgres"]  # the module's fixture, shared


@pytest.fixture
def edge_database(private_postgres: PrivatePostgres) -> Iterator[tuple[str, Callable[[], dict]]]:
    """(DATABASE_URL of a fresh migrated database, a function: {request_id: rows with it})."""
    import psycopg

    name = f"edge_shipper_{os.getpid()}_{time.monotonic_ns()}"
    with psycopg.connect(private_postgres.url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgres://postgres@127.0.0.1:{private_postgres.port}/{name}"
    processes.manage("migrate", "--no-input", "-v", "0", env=service_environment(DATABASE_URL=url))

    def stored() -> dict[str, int]:
        with psycopg.connect(url, connect_timeout=5) as db:
            rows = db.execute(
                "SELECT request_id, count(*) FROM fibonacci_requestlog GROUP BY request_id"
            ).fetchall()
        return dict(rows)

    yield url, stored


def _start_shipper(database_url: str, log_path: Path, output: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "manage.py", "ship_edge_log", str(log_path)]
    command += ["--poll-interval", "0.1", "--batch-size", "50"]
    return processes.start_process(
        command, env=service_environment(DATABASE_URL=database_url), log_path=output
    )


def _wait_for(stored: Callable[[], dict], expected: set[str], *, within_seconds: float) -> dict:
    deadline = time.monotonic() + within_seconds
    rows = stored()
    while set(rows) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
        rows = stored()
    return rows


def _assert_each_once(rows: dict[str, int], written: set[str]) -> None:
    assert not written - set(rows), f"{len(written - set(rows))} of {len(written)} lines missing"
    assert all(count == 1 for count in rows.values()), "a request id has several rows"
    assert set(rows) == written


def _write(log: EdgeLogFile, count: int) -> set[str]:
    lines = [request_line(uri=f"/api/v1/fibonacci/?n={number % 50}") for number in range(count)]
    log.write(*lines)
    return {request_id_of(line) for line in lines}


def test_a_postgresql_outage_keeps_the_lines_waiting_and_ships_them_once(
    private_postgres, edge_database, tmp_path
):
    database_url, stored = edge_database
    log_path, output = tmp_path / "edge.log", tmp_path / "shipper.out"
    log = EdgeLogFile(log_path)
    shipper = _start_shipper(database_url, log_path, output)
    try:
        written = _write(log, 200)
        assert set(_wait_for(stored, written, within_seconds=20)) == written

        private_postgres.stop()
        written |= _write(log, 300)
        time.sleep(3)  # retried and backed off meanwhile
        assert shipper.poll() is None, output.read_text()
        private_postgres.start()
        rows = _wait_for(stored, written, within_seconds=40)
        written |= _write(log, 10)  # and shipping goes on
        rows = _wait_for(stored, written, within_seconds=20)
    finally:
        status = processes.stop_process(shipper)  # SIGTERM
        log.close()
    text = output.read_text()
    print(f"outage: {len(rows)} rows for {len(written)} lines; shipper said:\n{text}")
    _assert_each_once(rows, written)
    assert status == 0, text
    assert text.count("cannot ship") == 1, "an outage is logged once per interval"
    assert "shipping again" in text


def test_a_killed_shipper_restarted_ships_each_line_once(edge_database, tmp_path):
    database_url, stored = edge_database
    log_path, output = tmp_path / "edge.log", tmp_path / "shipper.out"
    log = EdgeLogFile(log_path)
    written = _write(log, 5000)
    first = _start_shipper(database_url, log_path, output)
    try:
        deadline = time.monotonic() + 30
        while not stored() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # its own session: the group is its own
        first.wait()
    shipped_before = len(stored())
    second = _start_shipper(database_url, log_path, output)
    try:
        rows = _wait_for(stored, written, within_seconds=60)
    finally:
        status = processes.stop_process(second)
        log.close()
    print(f"SIGKILL after {shipped_before} rows, restart: {len(rows)} rows for {len(written)}")
    assert 0 < shipped_before < len(written), "the kill did not land mid-backlog"
    _assert_each_once(rows, written)
    assert status == 0
