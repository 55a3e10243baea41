"""Starting, probing and stopping the service's processes on loopback: gunicorn and nginx.

The one process helper of `make stack`, the tests and the benchmark: a free
port, the environment of a service process, a start in a session of its own,
a readiness wait, a stop by process id (a graceful signal, then SIGKILL of
the process group), and a gunicorn master's worker pids.
"""

from __future__ import annotations

import ctypes
import os
import runpy
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from deploy.nginx import LOCAL_SERVER_NAMES, NginxLayout, nginx_binary

PROJECT_DIR = Path(__file__).resolve().parent.parent
GUNICORN_CONF = PROJECT_DIR / "deploy" / "gunicorn.conf.py"

# What configures a service process. Tests and the benchmark start from none of
# the shell's, so that they run the same whatever a developer has exported.
SERVICE_VARIABLE_PREFIXES = ("DJANGO_", "FIB_", "GUNICORN_", "DATABASE_URL", "REDIS_URL")
# Debug is off, so settings insist on a key; this one only ever serves loopback.
LOOPBACK_SECRET_KEY = "loopback-only-secret-key-never-used-in-production-0123456789"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def shell_service_variables() -> dict[str, str]:
    """This shell's service variables (DJANGO_*, FIB_*, GUNICORN_*, DATABASE_URL, REDIS_URL)."""
    return {
        key: value for key, value in os.environ.items() if key.startswith(SERVICE_VARIABLE_PREFIXES)
    }


def service_environment(
    *, secret_key: str = LOOPBACK_SECRET_KEY, **settings: str
) -> dict[str, str]:
    """The environment of a production-like service process on loopback, with settings on top.

    This shell's environment without its service variables, then production
    settings (debug off, a secret key, the hosts a local nginx serves), then
    `settings`.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(SERVICE_VARIABLE_PREFIXES)
    }
    env.update(
        DJANGO_SETTINGS_MODULE="fibproject.settings",
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY=secret_key,
        # The names nginx's server_name passes on: 127.0.0.1, localhost, [::1].
        DJANGO_ALLOWED_HOSTS=",".join(LOCAL_SERVER_NAMES.split()),
        PYTHONPATH=str(PROJECT_DIR),
    )
    env.update(settings)
    return env


def gunicorn_setting(name: str, env: Mapping[str, str]) -> int:
    """A numeric setting (`timeout`, `workers`) as deploy/gunicorn.conf.py computes it under env.

    env is the environment gunicorn runs under (its systemd EnvironmentFile,
    the stack's environment), not this process's: the file is evaluated with
    os.environ set to env, and os.environ is restored afterwards.
    """
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        return int(runpy.run_path(str(GUNICORN_CONF))[name])
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, get SIGTERM when the starting thread dies.

    Children run in sessions of their own (so that Ctrl-C reaches only the
    launcher, which stops them in order); this keeps a SIGKILLed launcher from
    leaving them running.
    """
    if sys.platform == "linux":
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def start_process(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    cwd: Path = PROJECT_DIR,
) -> subprocess.Popen[bytes]:
    """Start command in a session of its own; its output appended to log_path (else inherited).

    Its own session means a terminal's Ctrl-C reaches only the launcher, which
    then stops it gracefully, and stop_process can SIGKILL the whole group
    (a gunicorn master and its workers) as a crashed machine would die.
    """
    output = log_path.open("ab") if log_path is not None else None
    try:
        return subprocess.Popen(
            list(command),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT if output is not None else None,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    finally:
        if output is not None:
            output.close()


def start_gunicorn(
    *, env: Mapping[str, str], log_path: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start gunicorn with deploy/gunicorn.conf.py, as the systemd unit does."""
    return start_process(
        [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF)], env=env, log_path=log_path
    )


def start_nginx(layout: NginxLayout) -> subprocess.Popen[bytes]:
    """Start a rendered nginx in the foreground (`daemon off`); stop it by pid."""
    return start_process(
        [nginx_binary(), "-p", str(layout.prefix), "-c", str(layout.conf), "-g", "daemon off;"]
    )


def wait_until_ready(
    url: str,
    *,
    process: subprocess.Popen[bytes],
    timeout_seconds: float = 30.0,
    any_status: bool = False,
) -> None:
    """Poll url until it answers 200 (any HTTP status with any_status); fail early if process exits.

    Raises RuntimeError when the process exits first, TimeoutError when the
    time runs out.
    """
    deadline = time.monotonic() + timeout_seconds
    request = urllib.request.Request(url, headers={"Host": "127.0.0.1"})
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"process {process.pid} exited ({process.returncode}) before {url}")
        try:
            with urllib.request.urlopen(request, timeout=1) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError:
            if any_status:
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout_seconds:.0f} s")
        time.sleep(0.05)


def stop_process(
    process: subprocess.Popen[bytes],
    *,
    graceful_signal: int = signal.SIGTERM,
    timeout_seconds: float = 15.0,
) -> int:
    """Send graceful_signal to process by its pid and wait; SIGKILL its group if it lingers.

    Returns its exit status. Only for processes started by start_process,
    whose process group is their own.
    """
    if process.poll() is None:
        process.send_signal(graceful_signal)
        try:
            process.wait(timeout=timeout_seconds)
        except subprocess.TimeoutExpired:
            # Its own session: the group id is its pid, and holds only what it started.
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


def start_edge_log_shipper(
    edge_log: Path,
    *,
    env: Mapping[str, str],
    log_path: Path | None = None,
    metrics_port: int | None = None,
) -> subprocess.Popen[bytes]:
    """`manage.py ship_edge_log`: the edge log into the request log, as its systemd unit runs it.

    With metrics_port, it serves the edge's metrics on 127.0.0.1:metrics_port.
    """
    command = [
        sys.executable,
        "manage.py",
        "ship_edge_log",
        str(edge_log),
        "--poll-interval",
        "0.2",
    ]
    if metrics_port is not None:
        command += ["--metrics-port", str(metrics_port)]
    return start_process(command, env=env, log_path=log_path)


def stop_nginx(process: subprocess.Popen[bytes]) -> int:
    """SIGQUIT: nginx stops accepting and finishes the requests in flight."""
    return stop_process(process, graceful_signal=signal.SIGQUIT, timeout_seconds=10)


def stop_gunicorn(process: subprocess.Popen[bytes], *, graceful_timeout: float = 35) -> int:
    """SIGTERM: workers answer what is queued, flush the request log, then exit."""
    return stop_process(process, graceful_signal=signal.SIGTERM, timeout_seconds=graceful_timeout)


def worker_pids(master_pid: int) -> list[int]:
    """The pids of a gunicorn master's workers (its child processes), sorted."""
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children")
    if children.exists():
        return sorted(int(pid) for pid in children.read_text().split())
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended while we looked
        if int(fields[1]) == master_pid:
            found.append(int(stat.parent.name))
    return sorted(found)


def manage(*args: str, env: Mapping[str, str]) -> None:
    """Run a manage.py command with env, failing loudly."""
    subprocess.run([sys.executable, "manage.py", *args], cwd=PROJECT_DIR, env=dict(env), check=True)
