"""gunicorn settings for the Fibonacci service, read from the environment.

Used by the systemd unit, `make stack` and the end-to-end tests:
`gunicorn -c deploy/gunicorn.conf.py`. nginx's proxy timeouts are rendered
from `timeout` as this file computes it under the service's own environment
(deploy/processes.py gunicorn_setting; `python -m deploy render --env-file`),
so the two tiers cannot drift apart.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from pathlib import Path
from typing import Any

# The project root: importable from here on (gunicorn loads this file before
# it changes to `chdir`), and the directory the app runs in, from anywhere.
_PROJECT_DIR = str(Path(__file__).resolve().parent.parent)
if _PROJECT_DIR not in sys.path:
    sys.path.insert(0, _PROJECT_DIR)

from fibproject.env import env_bool, env_choice, env_int, env_list, env_str  # noqa: E402
from fibproject.logging_config import LOG_FORMATS, default_log_format  # noqa: E402

wsgi_app = "fibproject.wsgi:application"
# The hooks below read Django settings, also when the app is not preloaded.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fibproject.settings")
chdir = _PROJECT_DIR

# Behind nginx on the same host: loopback TCP (a Unix socket also works:
# GUNICORN_BIND=unix:/run/fibonacci/gunicorn.sock, with FIB_TRUSTED_PROXIES=unix).
bind = env_list("GUNICORN_BIND", "127.0.0.1:8000")

# Sync workers: the work per request is CPU-bound and short, and nginx buffers
# both directions, so a slow client never holds a worker. 2 x cores + 1 keeps
# every core busy while some workers wait on the database or Redis. Cores are
# those this process may run on (a container's or systemd's CPU set). The sync
# worker, except that on SIGTERM it answers the connections already queued for
# it instead of leaving them to be reset (deploy/gunicorn_worker.py).
worker_class = "deploy.gunicorn_worker.DrainingSyncWorker"
_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
workers = env_int("GUNICORN_WORKERS", default=2 * (_cores or 1) + 1, minimum=1)

# Load the application once in the master: fibproject.wsgi builds the prepared
# sequence bytes (about 31 MB at FIB_MAX_N=10000) at import, and forked workers
# share those pages copy-on-write instead of building their own. Nothing that
# must not be shared is opened at import: the request-log writer thread starts
# lazily in each worker, and database connections open on first use.
preload_app = True

# Recycle workers now and then against slow leaks; jitter keeps them from all
# restarting at once.
max_requests = env_int("GUNICORN_MAX_REQUESTS", default=10_000)
max_requests_jitter = env_int("GUNICORN_MAX_REQUESTS_JITTER", default=1_000)

# A worker silent this long is killed and replaced. No legitimate request takes
# more than a fraction of a second; nginx waits `timeout + 5` seconds for an
# answer (proxy_read_timeout), so it is gunicorn that ends a stuck request, and
# logs it, not nginx.
timeout = env_int("GUNICORN_TIMEOUT", default=30, minimum=1)
# On SIGTERM or SIGHUP a worker finishes its request and flushes the request
# log within this time; it is as long as any request may run.
graceful_timeout = env_int("GUNICORN_GRACEFUL_TIMEOUT", default=30, minimum=1)

# Access log: the client address nginx saw (X-Real-IP), the request id nginx
# generated (X-Request-ID, also in nginx's log and the request log) and the
# request time in seconds (%(L)s).
accesslog = env_str("GUNICORN_ACCESS_LOG", "-") or None
errorlog = env_str("GUNICORN_ERROR_LOG", "-")
loglevel = env_str("GUNICORN_LOG_LEVEL", "info")
access_log_format = (
    '%({x-real-ip}i)s %(h)s %(t)s "%(r)s" %(s)s %(B)s %(L)ss rid=%({x-request-id}i)s "%(a)s"'
)

# --- Structured logs and metrics (docs/operations.md) ---------------------------
# FIB_LOG_FORMAT=json (the default with debug off): the error and access logs as
# one JSON object per line, the access line with the request id the app answered
# with (deploy/gunicorn_logging.py); `text` keeps the format above.
_log_format = env_choice(
    "FIB_LOG_FORMAT",
    choices=LOG_FORMATS,
    default=default_log_format(debug=env_bool("DJANGO_DEBUG", default=False)),
)
if _log_format == "json":
    logger_class = "deploy.gunicorn_logging.JsonLinesLogger"

# With FIB_METRICS on, each worker counts into files of its own in
# PROMETHEUS_MULTIPROC_DIR and /metrics adds all of them up (prometheus-client's
# multiprocess mode). The directory is this instance's own: by default one per
# bind address in memory (/dev/shm). It must exist before the preloaded app
# opens its files, so it is made here; the master empties it when it starts
# (on_starting), forgets each worker that exits (child_exit) and, when it stops,
# empties it again and removes the default one (on_exit).
_metrics = env_bool("FIB_METRICS", default=True)
metrics_dir = ""
_shm = "/dev/shm" if os.path.isdir("/dev/shm") else "/tmp"
_instance = re.sub(r"[^A-Za-z0-9.-]+", "_", ",".join(bind))
_default_metrics_dir = f"{_shm}/fibonacci-metrics-{os.getuid()}-{_instance}"
if _metrics:
    metrics_dir = env_str("PROMETHEUS_MULTIPROC_DIR") or _default_metrics_dir
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    os.makedirs(metrics_dir, exist_ok=True)
else:  # counted nowhere: prometheus-client must not look for the directory
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)


def post_fork(server: Any, worker: Any) -> None:
    """Count the new worker in the metrics and start its stats thread."""
    if metrics_dir:
        from fibproject import metrics

        metrics.worker_started(configured_workers=server.cfg.workers)


def on_exit(server: Any) -> None:
    """The counts end with the instance: empty the directory, and remove it if it is ours."""
    if metrics_dir:
        from fibproject.metrics import empty_metrics_directory

        empty_metrics_directory(metrics_dir)
        if metrics_dir == _default_metrics_dir:
            # Something else put there stays, and the directory with it.
            with contextlib.suppress(OSError):
                os.rmdir(metrics_dir)


def child_exit(server: Any, worker: Any) -> None:
    """Drop an exited worker's live gauges; its counts stay in the totals, in the archive."""
    if metrics_dir:
        from fibproject.metrics import forget_exited_worker

        forget_exited_worker(metrics_dir, worker.pid)


# The heartbeat file lives in memory, not on a disk that may stall.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

# gunicorn >= 25 opens a control socket at one fixed path per user; several
# instances on one host would fight over it. Off unless a path is given.
control_socket_disable = not env_str("GUNICORN_CONTROL_SOCKET")
if not control_socket_disable:
    control_socket = env_str("GUNICORN_CONTROL_SOCKET")

proc_name = "fibonacci"


def worker_exit(server: Any, worker: Any) -> None:
    """Flush the worker's buffered request-log records before it exits (stop, reload, recycle)."""
    from requestlog import buffer

    # A writer stuck on a database that does not answer is not waited for: what it
    # has not written by then is spooled (requestlog/spool.py), not lost.
    buffer.shutdown(timeout_seconds=2.0)


def on_starting(server: Any) -> None:
    """Refuse to start several workers that would each count rate limits on their own."""
    from django.core.exceptions import ImproperlyConfigured

    from fibonacci.ratelimit.budgets import check_shared_counters
    from fibproject.metrics import empty_metrics_directory

    if metrics_dir:  # a previous run's counters must not add to this one's
        empty_metrics_directory(metrics_dir)
    try:
        check_shared_counters(workers=server.cfg.workers)
    except ImproperlyConfigured as exc:
        raise SystemExit(f"gunicorn: {exc}") from exc
