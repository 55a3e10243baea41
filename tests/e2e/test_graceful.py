"""Reload (SIGHUP) and stop (SIGTERM) of gunicorn under load: nothing fails, nothing is lost."""

from __future__ import annotations

import signal
import time

from deploy import stack

from .conftest import GENEROUS_NGINX, UNLIMITED_ENV, LoadGenerator, wait_for_log


def _worker_pids(app) -> set[int]:
    return set(stack.worker_pids(app.process.pid))


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
