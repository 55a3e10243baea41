"""The request log through real faults: a PostgreSQL of this module's own stopped or frozen.

gunicorn runs as deployed (deploy/gunicorn.conf.py) against a private
PostgreSQL cluster (initdb into a temporary directory, a free loopback port),
which the tests stop (fast shutdown) or freeze (SIGSTOP on the postmaster and
every backend) while workers exit by SIGHUP, SIGTERM and `max_requests`.
Every answered request must end up in the table exactly once, by request id.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy import processes
from tests.conftest import require_program
from tests.processes import free_port, service_environment

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _descendants(pid: int) -> list[int]:
    """pid's child processes and theirs, parents first."""
    found: list[int] = []
    children = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        pids = [int(child) for child in children.read_text().split()]
    except OSError:
        return found
    for child in pids:
        found.append(child)
        found.extend(_descendants(child))
    return found


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster of the test's own, started and stopped by its pid."""

    data_dir: Path
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        """DATABASE_URL of its `postgres` database."""
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def _pid(self) -> int:
        return int((self.data_dir / "postmaster.pid").read_text().split()[0])

    def start(self) -> None:
        """Start the server and wait until it accepts queries."""
        options = f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir)]
            + ["-o", options, "-l", str(self.log_path), "-w", "-t", "30", "start"],
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster), waiting until it is gone."""
        pid = self._pid()
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    def freeze(self) -> list[int]:
        """SIGSTOP the postmaster and all its backends: a server that accepts but never answers."""
        pids = [self._pid(), *_descendants(self._pid())]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        return pids

    @staticmethod
    def thaw(pids: list[int]) -> None:
        """SIGCONT what freeze() stopped."""
        for pid in reversed(pids):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    """A fresh cluster on a free loopback port (trust auth), removed after the module."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL 15 server binaries are not in {PG_BIN}")
    require_program("runuser")
    if os.geteuid() != 0:
        pytest.skip("starting a private PostgreSQL as the postgres user needs root")
    base = Path(tempfile.mkdtemp(prefix="fib-pg-faults-"))
    base.chmod(0o755)
    data_dir = base / "data"
    subprocess.run(["chown", "postgres", str(base)], check=True)
    subprocess.run(
        ["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(data_dir)]
        + ["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    server = PrivatePostgres(data_dir=data_dir, port=free_port(), log_path=base / "postgres.log")
    server.start()
    try:
        yield server
    finally:
        if (data_dir / "postmaster.pid").exists():
            PrivatePostgres.thaw([server._pid(), *_descendants(server._pid())])
            server.stop()
        subprocess.run(["rm", "-rf", str(base)], check=False)


@dataclass
class Service:
    """A gunicorn instance under test: its master process, URL and request helpers."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def get(self, path: str, *, timeout: float = 10.0) -> tuple[int, str | None, float]:
        """(status, X-Request-ID, seconds) of one GET on a fresh connection."""
        started = time.monotonic()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request("GET", path, headers={"Host": "127.0.0.1"})
            response = connection.getresponse()
            response.read()
            return response.status, response.getheader("X-Request-ID"), time.monotonic() - started
        finally:
            connection.close()

    def load(self, count: int, *, threads: int = 4) -> tuple[set[str], list[float]]:
        """Send count API requests; the request ids answered 200, and every answer's seconds."""

        def one(number: int) -> tuple[int, str | None, float] | None:
            try:
                return self.get(f"/api/v1/fibonacci/?n={number % 50 + 1}")
            except OSError:
                return None  # refused or reset while workers were replaced: not answered

        with ThreadPoolExecutor(threads) as pool:
            answers = [answer for answer in pool.map(one, range(count)) if answer is not None]
        return {rid for status, rid, _ in answers if status == 200 and rid}, [
            seconds for _, _, seconds in answers
        ]

    def workers(self) -> set[int]:
        """The master's worker pids right now."""
        return set(processes.worker_pids(self.process.pid))

    def wait_for_workers(self, count: int, *, not_in: AbstractSet[int] = frozenset()) -> None:
        """Wait until count workers run, none of them in not_in."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = self.workers()
            if len(now) == count and not (now & not_in):
                return
            time.sleep(0.05)
        pytest.fail(f"workers did not turn over: {self.workers()} (old {not_in})")


@contextmanager
def service(database_url: str, spool_dir: Path, tmp_path: Path, **env: str) -> Iterator[Service]:
    """gunicorn with the deployed config on a free port, two workers; stopped by pid after."""
    port = free_port()
    environment = service_environment(
        DATABASE_URL=database_url,
        FIB_RATE_LIMIT_ENABLED="false",
        FIB_LOG_SPOOL_DIR=str(spool_dir),
        FIB_LOG_FLUSH_MS="200",
        GUNICORN_BIND=f"127.0.0.1:{port}",
        GUNICORN_WORKERS="2",
        GUNICORN_ACCESS_LOG="",
        **env,
    )
    processes.manage("migrate", "--no-input", "-v", "0", env=environment)
    log_path = tmp_path / "gunicorn.log"
    process = processes.start_gunicorn(env=environment, log_path=log_path)
    running = Service(process=process, port=port, log_path=log_path)
    try:
        processes.wait_until_ready(f"http://127.0.0.1:{port}/healthz", process=process)
        running.wait_for_workers(2)
        yield running
    finally:
        processes.stop_gunicorn(process)


@pytest.fixture
def log_database(private_postgres: PrivatePostgres) -> Iterator[tuple[str, Callable[[], dict]]]:
    """(DATABASE_URL of a fresh database, function returning {request_id: rows with it})."""
    name = f"faults_{os.getpid()}_{time.monotonic_ns()}"
    import psycopg

    with psycopg.connect(private_postgres.url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgres://postgres@127.0.0.1:{private_postgres.port}/{name}"

    def stored() -> dict[str, int]:
        with psycopg.connect(url, connect_timeout=5) as db:
            rows = db.execute(
                "SELECT request_id, count(*) FROM fibonacci_requestlog GROUP BY request_id"
            ).fetchall()
        return dict(rows)

    yield url, stored


def _wait_for_rows(
    stored: Callable[[], dict], expected: set[str], *, within_seconds: float
) -> dict:
    deadline = time.monotonic() + within_seconds
    rows = stored()
    while set(rows) != expected and time.monotonic() < deadline:
        time.sleep(0.25)
        rows = stored()
    return rows


def _assert_each_once(rows: dict[str, int], answered: set[str]) -> None:
    missing = answered - set(rows)
    duplicated = {rid: count for rid, count in rows.items() if count != 1}
    assert not missing, f"{len(missing)} of {len(answered)} answered requests have no row"
    assert not duplicated, f"{len(duplicated)} request ids have several rows"
    assert set(rows) == answered


def test_sighup_during_an_outage_loses_no_record(private_postgres, log_database, tmp_path):
    database_url, stored = log_database
    with service(database_url, tmp_path / "spool", tmp_path) as app:
        answered, _ = app.load(200)
        private_postgres.stop()
        down, _ = app.load(400)
        answered |= down
        old = app.workers()
        os.kill(app.process.pid, signal.SIGHUP)
        app.wait_for_workers(2, not_in=old)
        after, _ = app.load(200)
        answered |= after
        private_postgres.start()
        rows = _wait_for_rows(stored, answered, within_seconds=20)
    rows = stored()
    print(f"SIGHUP in an outage: {len(rows)} rows for {len(answered)} answered requests")
    _assert_each_once(rows, answered)


def test_sigterm_during_an_outage_spools_for_the_next_start(
    private_postgres, log_database, tmp_path
):
    database_url, stored = log_database
    spool = tmp_path / "spool"
    with service(database_url, spool, tmp_path) as app:
        answered, _ = app.load(100)
        private_postgres.stop()
        answered |= app.load(300)[0]
    # Stopped (SIGTERM) with the database down: the records wait on disk.
    assert any(spool.rglob("*.jsonl"))
    private_postgres.start()
    with service(database_url, spool, tmp_path) as app:
        answered |= app.load(10)[0]  # the first record starts a writer, which reads the spool
        rows = _wait_for_rows(stored, answered, within_seconds=20)
    rows = stored()
    print(f"SIGTERM in an outage, then a start: {len(rows)} rows for {len(answered)} answered")
    _assert_each_once(rows, answered)
    assert not any(spool.rglob("*.jsonl"))


def test_max_requests_recycling_during_an_outage_loses_no_record(
    private_postgres, log_database, tmp_path
):
    database_url, stored = log_database
    with service(
        database_url,
        tmp_path / "spool",
        tmp_path,
        GUNICORN_MAX_REQUESTS="60",
        GUNICORN_MAX_REQUESTS_JITTER="0",
    ) as app:
        private_postgres.stop()
        started_workers = app.workers()
        answered, _ = app.load(600)
        recycled = started_workers - app.workers()
        private_postgres.start()
        answered |= app.load(20)[0]
        rows = _wait_for_rows(stored, answered, within_seconds=20)
    rows = stored()
    print(f"recycling in an outage: {len(rows)} rows for {len(answered)} answered requests")
    assert recycled, "no worker was recycled: max_requests did not apply"
    _assert_each_once(rows, answered)


def test_a_frozen_database_under_load_overflows_to_the_spool_not_over_the_bound(
    private_postgres, log_database, tmp_path
):
    database_url, stored = log_database
    with service(database_url, tmp_path / "spool", tmp_path, FIB_LOG_BUFFER_SIZE="100") as app:
        answered, _ = app.load(20)
        frozen = private_postgres.freeze()
        try:
            answered |= app.load(100)[0]
            time.sleep(6)  # the writers' inserts have hung past STUCK_WRITE_SECONDS
            answered |= app.load(400)[0]  # twice what the two buffers hold
        finally:
            private_postgres.thaw(frozen)
        rows = _wait_for_rows(stored, answered, within_seconds=30)
    rows = stored()
    print(f"frozen database, running workers: {len(rows)} rows for {len(answered)} answered")
    _assert_each_once(rows, answered)


def test_a_frozen_database_answers_readyz_503_fast_and_loses_no_record(
    private_postgres, log_database, tmp_path
):
    database_url, stored = log_database
    with service(database_url, tmp_path / "spool", tmp_path) as app:
        answered, _ = app.load(100)
        assert app.get("/readyz")[0] == 200
        frozen = private_postgres.freeze()
        try:
            time.sleep(1.1)  # past the interval for which the 200 above is kept
            probes = []
            for _ in range(3):
                try:
                    status, _, seconds = app.get("/readyz", timeout=15)
                except TimeoutError:
                    status, seconds = 0, 15.0
                probes.append((status, seconds))
                time.sleep(1.1)  # past the probe's cache interval
            down, latencies = app.load(300)
            answered |= down
            old = app.workers()
            exit_started = time.monotonic()
            os.kill(app.process.pid, signal.SIGHUP)
            app.wait_for_workers(2, not_in=old)
            exit_seconds = time.monotonic() - exit_started
            answered |= app.load(100)[0]
        finally:
            private_postgres.thaw(frozen)
        rows = _wait_for_rows(stored, answered, within_seconds=30)
    rows = stored()
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print(
        f"frozen database: /readyz {probes}, API p99 {p99 * 1000:.0f} ms, "
        f"old workers gone after {exit_seconds:.1f} s, "
        f"{len(rows)} rows for {len(answered)} answered requests"
    )
    assert all(status == 503 and seconds < 2.5 for status, seconds in probes), probes
    assert p99 < 1.0
    assert exit_seconds < 10
    _assert_each_once(rows, answered)
