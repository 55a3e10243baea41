"""Real server processes for tests: deploy/processes.py's helpers, and a gunicorn fixture helper.

Tests start, probe and stop processes only through deploy.processes (the
helpers `make stack` and the benchmark use); this module re-exports the
ones they need and adds an HTTP GET that treats error statuses as answers.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from email.message import Message
from pathlib import Path

from deploy.processes import (
    PROJECT_DIR,
    free_port,
    service_environment,
    start_gunicorn,
    stop_gunicorn,
    wait_until_ready,
)

__all__ = ["PROJECT_DIR", "free_port", "gunicorn", "http_get", "service_environment"]


def http_get(
    url: str, *, headers: Mapping[str, str] | None = None, timeout: float = 10.0
) -> tuple[int, Message, bytes]:
    """(status, headers, body) of a GET; HTTP errors are answers, not exceptions."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


@contextmanager
def gunicorn(*, env: Mapping[str, str], workers: int = 2, log_path: Path) -> Iterator[str]:
    """gunicorn as deployed (deploy/gunicorn.conf.py) on a free loopback port; yields its URL."""
    port = free_port()
    process = start_gunicorn(
        env={**env, "GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": str(workers)},
        log_path=log_path,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{base_url}/healthz", process=process)
        yield base_url
    finally:
        stop_gunicorn(process)
