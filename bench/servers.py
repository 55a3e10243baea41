"""Starting, probing and stopping the servers under test: gunicorn and nginx on loopback.

Every server binds a free 127.0.0.1 port, is waited for until it answers HTTP,
and is stopped by its own process id (SIGTERM, then SIGKILL after a timeout).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
VENV_BIN = PROJECT_DIR / ".venv" / "bin"

sys.path.insert(0, str(PROJECT_DIR))
from deploy import stack  # noqa: E402 - the project root is on the path from here on

APP_SPEC = "fibproject.wsgi:application"
BARE_SPEC = "bench.bare_app:application"
# gunicorn's worker timeout for every server under test; nginx is rendered to match.
GUNICORN_TIMEOUT_S = 120

_READY_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 15.0


class ServerStartError(RuntimeError):
    """A server exited or did not answer in time; the message carries its log tail."""


@dataclass(frozen=True)
class RunningServer:
    """A started process listening on 127.0.0.1:port, with its log file."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:port"""
        return f"http://127.0.0.1:{self.port}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def log_tail(path: Path, *, lines: int = 25) -> str:
    """The last lines of a server log, for error messages."""
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _answers_http(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP status means the server is up
    except OSError:
        return False


def wait_ready(server: RunningServer, *, path: str = "/") -> None:
    """Block until the server answers HTTP on `path`; raise if it exits or times out."""
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerStartError(
                f"{server.name} exited with code {server.process.returncode}:\n"
                + log_tail(server.log_path)
            )
        if _answers_http(server.base_url + path):
            return
        time.sleep(0.1)
    raise ServerStartError(
        f"{server.name} did not answer within {_READY_TIMEOUT_S:.0f} s:\n"
        + log_tail(server.log_path)
    )


def stop(process: subprocess.Popen[bytes], *, graceful: signal.Signals = signal.SIGTERM) -> None:
    """Stop one process by its pid: a graceful signal, then SIGKILL after a timeout."""
    if process.poll() is not None:
        return
    process.send_signal(graceful)
    try:
        process.wait(timeout=_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=_STOP_TIMEOUT_S)


def gunicorn_command(*, app_spec: str, port: int, workers: int) -> list[str]:
    """The gunicorn command line shared by the app and the bare callable."""
    return [
        str(VENV_BIN / "gunicorn"),
        "--worker-class=sync",
        f"--workers={workers}",
        "--preload",
        f"--bind=127.0.0.1:{port}",
        f"--timeout={GUNICORN_TIMEOUT_S}",
        # Heartbeat files in memory, as deploy/gunicorn.conf.py does; and no
        # control socket, whose one fixed path per user several instances share.
        "--worker-tmp-dir=/dev/shm",
        "--no-control-socket",
        "--log-level=warning",
        app_spec,
    ]


@contextlib.contextmanager
def gunicorn(
    *,
    name: str,
    app_spec: str,
    workers: int,
    env: Mapping[str, str],
    log_dir: Path,
    ready_path: str = "/",
) -> Iterator[RunningServer]:
    """Run gunicorn for the duration of the block; always stopped by pid on exit."""
    port = free_port()
    log_path = log_dir / f"gunicorn-{name}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            gunicorn_command(app_spec=app_spec, port=port, workers=workers),
            cwd=PROJECT_DIR,
            env=dict(env),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = RunningServer(name=name, process=process, port=port, log_path=log_path)
    try:
        wait_ready(server, path=ready_path)
        yield server
    finally:
        stop(process)


@dataclass(frozen=True)
class ProcessMemory:
    """Resident memory of one process, in KiB: current, peak, and proportional share."""

    pid: int
    rss_kib: int
    hwm_kib: int
    pss_kib: int


def _status_kib(text: str, field: str) -> int:
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def process_memory(pid: int) -> ProcessMemory:
    """VmRSS and VmHWM from /proc/PID/status, Pss from /proc/PID/smaps_rollup."""
    status = Path(f"/proc/{pid}/status").read_text()
    rollup = Path(f"/proc/{pid}/smaps_rollup")
    pss_kib = _status_kib(rollup.read_text(), "Pss") if rollup.exists() else 0
    return ProcessMemory(
        pid=pid,
        rss_kib=_status_kib(status, "VmRSS"),
        hwm_kib=_status_kib(status, "VmHWM"),
        pss_kib=pss_kib,
    )


def workers_memory(server: RunningServer) -> list[ProcessMemory]:
    """Memory of every worker of a running gunicorn."""
    return [process_memory(pid) for pid in stack.worker_pids(server.process.pid)]


def base_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """The environment for the app: production settings (debug off) plus `extra`."""
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_DEBUG": "false",
            "DJANGO_SECRET_KEY": "bench-only-secret-key-" + "x" * 40,
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DJANGO_LOG_LEVEL": "WARNING",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    env.update(extra)
    return env
