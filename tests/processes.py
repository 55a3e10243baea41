"""Start and stop real server processes for tests: free ports, readiness, stop by pid."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))


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


def wait_until_serving(
    url: str, *, process: subprocess.Popen, timeout_seconds: float = 30.0
) -> None:
    """Poll url until it answers; fail early if the process died."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before serving {url}")
        try:
            http_get(url, timeout=1.0)
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing answered at {url} within {timeout_seconds} s")


def stop(
    process: subprocess.Popen, *, sig: int = signal.SIGTERM, timeout_seconds: float = 15.0
) -> None:
    """Signal the process and wait; kill it if it does not exit in time."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout_seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def service_environment(**overrides: str) -> dict[str, str]:
    """The environment of a production-like service process (debug off)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "FIB_", "DATABASE_URL", "REDIS_URL"))
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
    """A gunicorn serving the project on a free loopback port; yields its base URL."""
    port = free_port()
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [
                GUNICORN,
                "fibproject.wsgi:application",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(workers),
                "--preload",
                "--chdir",
                str(PROJECT_DIR),
            ],
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(f"{base_url}/healthz", process=process)
        yield base_url
    finally:
        stop(process)
