"""Starting, probing and stopping the servers under test: gunicorn and nginx on loopback.

Every server binds a free 127.0.0.1 port, is waited for until it answers HTTP,
and is stopped by its own process id (SIGTERM, then SIGKILL after a timeout),
with deploy/processes.py, the helpers `make stack` and the tests use.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
VENV_BIN = PROJECT_DIR / ".venv" / "bin"

sys.path.insert(0, str(PROJECT_DIR))
from deploy import processes  # noqa: E402 - the project root is on the path from here on
from deploy.processes import free_port  # noqa: E402

APP_SPEC = "fibproject.wsgi:application"
BARE_SPEC = "bench.bare_app:application"
MINIMAL_DRF_SPEC = "bench.minimal_drf:application"
# gunicorn's worker timeout for every server under test; nginx is rendered to match.
GUNICORN_TIMEOUT_S = 120

_READY_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 15.0

__all__ = ["free_port"]


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


def log_tail(path: Path, *, lines: int = 25) -> str:
    """The last lines of a server log, for error messages."""
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def wait_ready(server: RunningServer, *, path: str = "/") -> None:
    """Block until the server answers HTTP (any status) on `path`; else raise with its log tail."""
    try:
        processes.wait_until_ready(
            server.base_url + path,
            process=server.process,
            timeout_seconds=_READY_TIMEOUT_S,
            any_status=True,
        )
    except (RuntimeError, TimeoutError) as error:
        raise ServerStartError(f"{server.name}: {error}:\n{log_tail(server.log_path)}") from error


def stop(process: subprocess.Popen[bytes], *, graceful: signal.Signals = signal.SIGTERM) -> None:
    """Stop one process by its pid: a graceful signal, then SIGKILL after a timeout."""
    processes.stop_process(process, graceful_signal=graceful, timeout_seconds=_STOP_TIMEOUT_S)


def gunicorn_command(
    *, app_spec: str, port: int, workers: int, access_log: Path | None = None
) -> list[str]:
    """The gunicorn command line shared by the app and the baselines (an access log if asked)."""
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
        *([f"--access-logfile={access_log}"] if access_log is not None else []),
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
    access_log: Path | None = None,
) -> Iterator[RunningServer]:
    """Run gunicorn for the duration of the block; always stopped by pid on exit."""
    port = free_port()
    log_path = log_dir / f"gunicorn-{name}.log"
    log_path.write_bytes(b"")
    process = processes.start_process(
        gunicorn_command(app_spec=app_spec, port=port, workers=workers, access_log=access_log),
        env=env,
        log_path=log_path,
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


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime 14 and stime 15 (1-based, proc(5)).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def workers_cpu_seconds(server: RunningServer) -> float:
    """CPU time used so far by all the workers of a running gunicorn."""
    return sum(cpu_seconds(pid) for pid in processes.worker_pids(server.process.pid))


def workers_memory(server: RunningServer) -> list[ProcessMemory]:
    """Memory of every worker of a running gunicorn."""
    return [process_memory(pid) for pid in processes.worker_pids(server.process.pid)]


def base_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """The environment for the app: production settings (debug off), quiet logs, plus `extra`."""
    return processes.service_environment(
        DJANGO_LOG_LEVEL="WARNING", PYTHONDONTWRITEBYTECODE="1", **extra
    )
