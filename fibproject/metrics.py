"""The app's Prometheus metrics, and /metrics, served to the operator's network only.

Requests are counted by django-prometheus's metric names, with bounded labels
only: the view (its URL name, never the raw path), the method (unknown ones
as one value) and the status. The rate limiter's outages, the request log's
buffer, the prepared table and the gunicorn workers are the service's own
(`fib_*`); docs/operations.md lists them all.

Under gunicorn every worker counts into files of its own in
PROMETHEUS_MULTIPROC_DIR (prometheus-client's multiprocess mode; see
deploy/gunicorn.conf.py) and /metrics, answered by any worker, adds up all of
them. Without that variable (`make run`) the process's own registry is served.

The request log's counters live in requestlog/buffer.py as plain integers;
a thread per worker copies them into metrics once a second
(PROCESS_STATS_INTERVAL_SECONDS), so the request path pays nothing for them.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django_prometheus.exports import ExportToDjangoView
from django_prometheus.middleware import Metrics
from prometheus_client import Counter, Gauge, Histogram

from fibonacci import addresses
from fibonacci.ratelimit.identity import client_ip, in_networks, is_from_trusted_proxy

# Seconds; an API answer takes about a millisecond, a large window tens of them.
LATENCY_BUCKETS_SECONDS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    float("inf"),
)
# django-prometheus's label values for a request no URL pattern matched and an unknown method.
UNNAMED_VIEW = "<unnamed view>"
INVALID_METHOD = "<invalid method>"
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "TRACE", "OPTIONS", "CONNECT", "PATCH"}
)
# How often each worker copies the request log's counters into metrics.
PROCESS_STATS_INTERVAL_SECONDS = 1.0


class RequestMetrics(Metrics):
    """django-prometheus's request metrics, the two that carry view, method and status.

    Its own middleware updates about ten series per request, reads a
    streamed-in-pieces answer's `content` (joining a 10 MB body) to measure it,
    and labels latency with the raw method; RequestMetricsMiddleware updates
    these two.
    """

    def register(self) -> None:
        """The counter of answers and the latency histogram, under django-prometheus's names."""
        self.responses = self.register_metric(
            Counter,
            "django_http_responses_total_by_status_view_method",
            "Count of responses by status, view, method.",
            ["status", "view", "method"],
        )
        self.latency = self.register_metric(
            Histogram,
            "django_http_requests_latency_seconds_by_view_method",
            "Histogram of request processing time labelled by view.",
            ["view", "method"],
            buckets=LATENCY_BUCKETS_SECONDS,
        )


# The rate limiter (fibonacci/ratelimit/budgets.py).
LIMITER_OUTAGES = Counter(
    "fib_ratelimit_outages_total",
    "Counter failures that started an outage interval, by what the limiter then does.",
    ["mode"],
)
LIMITER_UNCHECKED = Counter(
    "fib_ratelimit_unchecked_requests_total",
    "API requests answered while the counters were unavailable: allowed (failing open) "
    "or refused with 503 (failing closed).",
    ["decision"],
)

# The request log (requestlog/buffer.py), copied by each worker's stats thread.
REQUEST_LOG_BUFFERED = Gauge(
    "fib_request_log_buffered",
    "Request-log records waiting in memory for the database.",
    multiprocess_mode="livesum",
)
REQUEST_LOG_COUNTERS = {
    name: Counter(f"fib_request_log_{name}", help_text)
    for name, help_text in {
        "written": "Request-log records written to the database.",
        "dropped": "Request-log records lost: the buffer or the spool was full.",
        "rejected": "Request-log records the database refused for their data, or unparsable.",
        "spilled": "Request-log records moved to the local spool during an outage.",
    }.items()
}
REQUEST_LOG_SPOOL = {
    name: Gauge(f"fib_request_log_{name}", help_text, multiprocess_mode="livemax")
    for name, help_text in {
        "spool_files": "Files waiting in the request-log spool (shared by the workers).",
        "spool_bytes": "Bytes waiting in the request-log spool.",
    }.items()
}

# The process.
SEQUENCE_TABLE_BYTES = Gauge(
    "fib_sequence_table_bytes",
    "Bytes of the prepared sequence table (its three serialized forms) in one process.",
    multiprocess_mode="livemax",
)
SEQUENCE_TABLE_TERMS = Gauge(
    "fib_sequence_table_terms",
    "Terms in the prepared sequence table (FIB_MAX_N).",
    multiprocess_mode="livemax",
)
WORKERS = Gauge(
    "fib_gunicorn_workers",
    "Live worker processes serving requests.",
    multiprocess_mode="livesum",
)
WORKERS_CONFIGURED = Gauge(
    "fib_gunicorn_workers_configured",
    "Workers gunicorn is configured to keep running (GUNICORN_WORKERS).",
    multiprocess_mode="livemax",
)


class RequestMetricsMiddleware:
    """Counts every answer by view, method and status, and times it; outermost."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response
        metrics = RequestMetrics.get_instance()
        self._responses = metrics.responses
        self._latency = metrics.latency
        # (view, method, status) -> its counter and histogram children: a few
        # dozen at most, since every label value is bounded.
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        started = time.perf_counter()
        response = self.get_response(request)
        elapsed_seconds = time.perf_counter() - started
        match = request.resolver_match
        view = (match.view_name if match is not None else None) or UNNAMED_VIEW
        method = request.method if request.method in KNOWN_METHODS else INVALID_METHOD
        key = (view, method or INVALID_METHOD, response.status_code)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = (
                self._responses.labels(status=str(key[2]), view=view, method=key[1]),
                self._latency.labels(view=view, method=key[1]),
            )
        series[0].inc()
        series[1].observe(elapsed_seconds)
        return response


def is_metrics_client(request: HttpRequest) -> bool:
    """Whether the client may read /metrics: on this host (loopback) or in FIB_METRICS_ALLOWED.

    The client is the one the rate limiter counts (X-Real-IP from our proxies).
    A request relayed by a proxy we do not trust (it sent X-Real-IP) is refused
    whatever its connecting address: a public client must not become loopback
    because an nginx on this host forwards it.
    """
    if "HTTP_X_REAL_IP" in request.META and not is_from_trusted_proxy(request):
        return False
    address = client_ip(request)
    parsed = addresses.parse(address)
    if parsed is None:
        return False
    return parsed.is_loopback or in_networks(address, settings.FIB_METRICS_ALLOWED)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """The Prometheus text exposition of every worker's metrics; 404 to anyone but operators."""
    if not settings.FIB_METRICS or not is_metrics_client(request):
        raise Http404
    _process_stats.start()  # done already in a gunicorn worker (post_fork)
    _process_stats.copy()
    response: HttpResponse = ExportToDjangoView(request)
    response["Cache-Control"] = "no-store"
    return response


class ProcessStats:
    """Copies this process's request-log counters and table size into metrics, in a thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread_pid: int | None = None
        self._seen: dict[str, int] = {}

    def copy(self) -> None:
        """Bring the request-log metrics up to this process's counters now."""
        from fibonacci.sequence import sequence_table
        from requestlog import buffer

        table = sequence_table(settings.FIB_MAX_N)  # built at import (fibproject/wsgi.py)
        SEQUENCE_TABLE_BYTES.set(table.memory_bytes)
        SEQUENCE_TABLE_TERMS.set(table.size)
        if not settings.FIB_REQUEST_LOG:
            return
        stats = buffer.stats()
        stats["written"] = buffer.current_buffer().written
        with self._lock:
            REQUEST_LOG_BUFFERED.set(stats["buffered"])
            for name, counter in REQUEST_LOG_COUNTERS.items():
                value = stats.get(name, 0)
                seen = self._seen.get(name, 0)
                # A replaced buffer starts again from zero: count from there.
                counter.inc(value - seen if value >= seen else value)
                self._seen[name] = value
            for name, gauge in REQUEST_LOG_SPOOL.items():
                gauge.set(stats.get(name, 0))

    def start(self) -> None:
        """Count this process as a worker and start copying (once per process)."""
        with self._lock:
            if self._thread_pid == os.getpid():
                return
            self._thread_pid = os.getpid()
            self._seen = {}  # a forked child's buffer starts from zero
        WORKERS.set(1)
        threading.Thread(target=self._run, name="metrics-process-stats", daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(PROCESS_STATS_INTERVAL_SECONDS)
            try:
                self.copy()
            except Exception:  # noqa: BLE001 - metrics must never stop the worker; next time
                continue


_process_stats = ProcessStats()


def worker_started(*, configured_workers: int) -> None:
    """In a gunicorn worker, after the fork (post_fork): count it and start its stats thread."""
    WORKERS_CONFIGURED.set(configured_workers)
    _process_stats.start()


# The kinds of file whose values add up across processes (gauges are per process).
_ADDITIVE_FILE_KINDS = ("counter", "histogram")


def forget_exited_worker(directory: str, pid: int) -> None:
    """In gunicorn's master (child_exit): fold an exited worker's counts into the archive.

    Its live gauges go (prometheus-client's mark_process_dead). Its counters and
    histograms keep counting in the totals, but as files of their own they would
    pile up, one set per recycled worker (GUNICORN_MAX_REQUESTS: thousands a day
    on a busy node), and every scrape reads every file: their values are added
    to `counter_archive.db` and `histogram_archive.db` and their files removed.
    """
    from prometheus_client import multiprocess
    from prometheus_client.mmap_dict import MmapedDict

    multiprocess.mark_process_dead(pid, directory)
    for kind in _ADDITIVE_FILE_KINDS:
        exited = os.path.join(directory, f"{kind}_{pid}.db")
        if not os.path.exists(exited):
            continue
        archive = MmapedDict(os.path.join(directory, f"{kind}_archive.db"))
        try:
            for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(exited):
                archived, _ = archive.read_value(key)
                archive.write_value(key, archived + value, timestamp)
        finally:
            archive.close()
        # Removed right after: a scrape between the two adds this worker twice
        # for that one scrape, a window of microseconds once per recycled worker.
        os.remove(exited)


def empty_metrics_directory(directory: str) -> None:
    """Remove the counters a previous run left (gunicorn's master, before workers start)."""
    for entry in os.scandir(directory):
        if entry.name.endswith(".db"):
            os.remove(entry.path)
