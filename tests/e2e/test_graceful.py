"""Reload (SIGHUP) and stop (SIGTERM) of gunicorn under load: nothing fails, nothing is lost."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from deploy.processes import worker_pids
from tests.conftest import reference_fibonacci

from .conftest import GENEROUS_NGINX, UNLIMITED_ENV, LoadGenerator, wait_for_log


def _worker_pids(app) -> set[int]:
    return set(worker_pids(app.process.pid))


def _wait_for_new_workers(app, old: set[int], *, timeout_seconds: float = 20) -> set[int]:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        current = _worker_pids(app)
        if current and not current & old:
            return current
        time.sleep(0.1)
    raise AssertionError(f"workers {old} were not replaced within {timeout_seconds} s")


def test_reload_and_stop_under_load_fail_nothing_and_log_every_answer(
    stack_factory, e2e_database_url, client_address
):
    apps = stack_factory.start_apps(2, workers=2, **UNLIMITED_ENV)
    nginx = stack_factory.start_nginx(apps, **GENEROUS_NGINX)
    reloaded, survivor = apps

    with LoadGenerator(
        port=nginx.port, path="/api/v1/fibonacci/?n=100", source=client_address, max_seconds=40
    ) as load:
        load.wait_for(200)
        old_workers = _worker_pids(reloaded)
        reloaded.signal(signal.SIGHUP)
        _wait_for_new_workers(reloaded, old_workers)
        load.wait_for(len(load.results) + 300)
        reloaded.signal(signal.SIGTERM)
        assert reloaded.process.wait(timeout=40) == 0, "gunicorn stopped gracefully"
        load.wait_for(len(load.results) + 300)
        results = load.stop()

    assert [result for result in results if result.status != 200] == []
    answered = {result.request_id for result in results}
    rows = wait_for_log(
        e2e_database_url,
        client_ip=client_address,
        done=lambda rows: answered <= {row[0] for row in rows},
    )
    missing = answered - {row[0] for row in rows}
    print(f"SIGHUP + SIGTERM under load: {len(results)} answered, {len(rows)} logged")
    assert not missing, f"{len(missing)} of {len(answered)} answered requests are not in the log"
    served_by = set(nginx.upstreams_for(client_address))
    assert reloaded.address in served_by and survivor.address in served_by


QUEUED = 10


def _accept_queue_length(port: int) -> int:
    """Connections the kernel accepted for a listening 127.0.0.1:port that no worker took yet."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, queues = fields[1], fields[3], fields[4]
        # For a listening socket (state 0A) rx_queue is the accept queue's length.
        if state == "0A" and int(local.split(":")[1], 16) == port:
            return int(queues.split(":")[1], 16)
    return 0


def _signal_pending(pid: int, signum: int) -> bool:
    """Whether signum waits to be delivered to a (stopped) process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, mask = line.partition(":")
        if name in ("SigPnd", "ShdPnd") and int(mask, 16) & (1 << (signum - 1)):
            return True
    return False


def test_sigterm_answers_the_requests_already_queued_for_gunicorn(stack_factory, client_address):
    (app,) = stack_factory.start_apps(1, workers=1, **UNLIMITED_ENV)
    nginx = stack_factory.start_nginx([app], **GENEROUS_NGINX)
    (worker,) = worker_pids(app.process.pid)
    # A stopped worker accepts nothing: the requests wait in the kernel's accept
    # queue of gunicorn's socket, as they do behind busy workers under load.
    os.kill(worker, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(QUEUED) as pool:
            replies = [
                pool.submit(nginx.get, f"/api/v1/fibonacci/?n={n}", source=client_address)
                for n in range(1, QUEUED + 1)
            ]
            deadline = time.monotonic() + 10
            while _accept_queue_length(app.port) < QUEUED:
                assert time.monotonic() < deadline, "the requests did not reach gunicorn's queue"
                time.sleep(0.02)
            app.signal(signal.SIGTERM)
            # The master closes its socket, then signals the worker, which sees
            # the SIGTERM before it can accept anything.
            while not _signal_pending(worker, signal.SIGTERM):
                assert time.monotonic() < deadline, "the master did not signal its worker"
                time.sleep(0.02)
            os.kill(worker, signal.SIGCONT)
            answers = [future.result(timeout=30) for future in replies]
    finally:
        os.kill(worker, signal.SIGCONT)
    assert app.process.wait(timeout=40) == 0, "gunicorn stopped gracefully"

    statuses = [reply.status for reply in answers]
    print(f"SIGTERM with {QUEUED} requests queued: statuses {statuses}")
    assert statuses == [200] * QUEUED
    assert [reply.json()["sequence"] for reply in answers] == [
        reference_fibonacci(n) for n in range(1, QUEUED + 1)
    ]
