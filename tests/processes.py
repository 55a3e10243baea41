"""Real server processes for tests, started and stopped as deploy/stack.py does."""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from deploy import stack

PROJECT_DIR = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http_get(url: str, *, headers: Mapping[str, str] | None = None, timeout: float = 10.0):
    """(status, headers, body) of a GET; HTTP errors are answers, not exceptions."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def service_environment(**overrides: str) -> dict[str, str]:
    """The environment of a production-like service process (debug off)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "FIB_", "GUNICORN_", "DATABASE_URL", "REDIS_URL"))
    }
    env.update(
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY="tests-only-secret-key",
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
        DJANGO_SETTINGS_MODULE="fibproject.settings",
        PYTHONPATH=str(PROJECT_DIR),
    )
    env.update(overrides)
    return env


@contextmanager
def gunicorn(*, env: Mapping[str, str], workers: int = 2, log_path: Path) -> Iterator[str]:
    """gunicorn as deployed (deploy/gunicorn.conf.py) on a free loopback port; yields its URL."""
    port = free_port()
    process = stack.start_gunicorn(
        env={**env, "GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": str(workers)},
        log_path=log_path,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        stack.wait_until_ready(f"{base_url}/healthz", process=process)
        yield base_url
    finally:
        stack.stop_gunicorn(process)
