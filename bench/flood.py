"""A flood from one address with the shipped limits: who answers it, and does anyone else notice?

wrk opens 256 connections from 127.0.0.1 to nginx rendered with its shipped
shield (limit_req, limit_conn) in front of the full app with its shipped
budgets (FIB_RATE_LIMIT, FIB_RATE_LIMIT_LARGE). Meanwhile another client, from
127.0.0.2, asks for /healthz every PROBE_INTERVAL_S through the same nginx (a
new connection each time, as a load balancer's probe does). Reported: the
flood's answers, the probe's p50/p99, how many flood requests reached gunicorn
(counted in its access log) and the CPU its workers used meanwhile.
The same flood then goes through the edge (bench/edge_rows.py: counters in
Redis, then in nginx's shared memory) in front of the same app.
"""

from __future__ import annotations

import http.client
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_rows import edge_fronts
from frontend import SHIPPED_SHIELD, Front, RunningFront, nginx_fronts
from loadgen import WrkResult, run_wrk
from report import TargetCheck, print_table
from responses import url_path
from sections import (
    BENCH_DATABASE_URL,
    BENCH_REDIS_URL,
    LOG_ON,
    BenchContext,
    prepare_database,
    require_redis,
)
from servers import APP_SPEC, RunningServer, base_environment, gunicorn, workers_cpu_seconds

FLOOD_CONNECTIONS = 256
PROBE_SOURCE = "127.0.0.2"
PROBE_INTERVAL_S = 0.025  # 40 a second: within the shipped shield's 50r/s for the prober
HEALTHZ_P99_MAX_MS = 50.0
# The app's budgets as shipped (the settings' defaults), counted in Redis, logged in PostgreSQL.
SHIPPED_APP_SETTINGS = {
    "FIB_RATE_LIMIT_ENABLED": "true",
    "REDIS_URL": BENCH_REDIS_URL,
    "FIB_CACHE_KEY_PREFIX": "bench-flood",
    **LOG_ON,
    "FIB_TRUSTED_PROXIES": "127.0.0.1",
}


@dataclass(frozen=True)
class ProbeResult:
    """The other client's /healthz requests during the flood."""

    latencies_ms: list[float]
    connect_ms: list[float]
    failures: int

    def percentile(self, share: float) -> float:
        """The latency below which `share` of the probes answered (nearest rank)."""
        return nearest_rank(self.latencies_ms, share)


def nearest_rank(values: Sequence[float], share: float) -> float:
    """The value below which `share` of `values` lie (nearest rank); NaN for none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


@dataclass(frozen=True)
class FloodResult:
    """One flood through one front."""

    flood: WrkResult
    probe: ProbeResult
    reached_gunicorn: int
    worker_cpu_s: float
    seconds: float


def probe_healthz(*, base_url: str, stop: threading.Event) -> ProbeResult:
    """GET /healthz from PROBE_SOURCE every PROBE_INTERVAL_S until `stop`."""
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    latencies, connects, failures = [], [], 0
    while not stop.is_set():
        started = time.perf_counter()
        try:
            connection = http.client.HTTPConnection(
                host, int(port), timeout=5.0, source_address=(PROBE_SOURCE, 0)
            )
            connection.connect()
            connected = time.perf_counter()
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            response.read()
            connection.close()
            if response.status == 200:
                latencies.append((time.perf_counter() - started) * 1000)
                connects.append((connected - started) * 1000)
            else:
                failures += 1
        except OSError:
            failures += 1
        stop.wait(max(0.0, PROBE_INTERVAL_S - (time.perf_counter() - started)))
    return ProbeResult(latencies_ms=latencies, connect_ms=connects, failures=failures)


def warm_workers(app: RunningServer, *, workers: int) -> None:
    """Requests straight to gunicorn, so every worker has connected and imported before the flood.

    They name another client (X-Real-IP, believed from 127.0.0.1) so as not to
    spend the flooding address's budget.
    """
    for _ in range(4 * workers):
        for path in (url_path(10), "/healthz"):
            request = urllib.request.Request(
                app.base_url + path, headers={"X-Real-IP": "192.0.2.1"}
            )
            with urllib.request.urlopen(request, timeout=30.0) as response:
                response.read()


def api_lines(access_log: Path) -> int:
    """Requests for the API in a gunicorn access log."""
    if not access_log.exists():
        return 0
    with access_log.open(errors="replace") as lines:
        return sum(1 for line in lines if '"GET /api/' in line)


def flood_through(
    front: RunningFront, *, app: RunningServer, access_log: Path, seconds: float
) -> FloodResult:
    """wrk -c256 from one address through `front`, the /healthz probe alongside."""
    reached_before = api_lines(access_log)
    cpu_before = workers_cpu_seconds(app)
    stop = threading.Event()
    probes: list[ProbeResult] = []
    prober = threading.Thread(
        target=lambda: probes.append(probe_healthz(base_url=front.base_url, stop=stop)),
        daemon=True,
    )
    prober.start()
    try:
        flood = run_wrk(
            url=front.base_url + url_path(10),
            duration_s=seconds,
            connections=FLOOD_CONNECTIONS,
            threads=2,
        )
    finally:
        stop.set()
        prober.join(timeout=10)
    time.sleep(0.5)  # the last answers' access-log lines
    return FloodResult(
        flood=flood,
        probe=probes[0] if probes else ProbeResult(latencies_ms=[], connect_ms=[], failures=0),
        reached_gunicorn=api_lines(access_log) - reached_before,
        worker_cpu_s=workers_cpu_seconds(app) - cpu_before,
        seconds=seconds,
    )


def flood_seconds(ctx: BenchContext) -> float:
    """How long the flood lasts: a measured round, at least 2 s."""
    return max(2.0, ctx.load.duration_s)


def flood_section(ctx: BenchContext) -> list[TargetCheck]:
    """The flood through the shipped nginx (and EDGE_FLOOD_FRONTS) in front of the shipped app."""
    require_redis(BENCH_REDIS_URL)
    prepare_database(BENCH_DATABASE_URL)
    access_log = ctx.scratch / "gunicorn-flood-access.log"
    seconds = flood_seconds(ctx)
    with gunicorn(
        name="flood",
        app_spec=APP_SPEC,
        workers=ctx.workers,
        env=base_environment(SHIPPED_APP_SETTINGS),
        log_dir=ctx.scratch,
        ready_path="/healthz",
        access_log=access_log,
    ) as app:
        warm_workers(app, workers=ctx.workers)
        with (
            edge_fronts(
                scratch=ctx.scratch,
                upstream=app,
                app_settings=SHIPPED_APP_SETTINGS,
                shield=SHIPPED_SHIELD,
                label="-flood",
            ) as edges,
            nginx_fronts(
                scratch=ctx.scratch,
                fronts=[Front(name="no edge", upstream=app, options=SHIPPED_SHIELD), *edges],
            ) as running,
        ):
            results = {
                name: flood_through(front, app=app, access_log=access_log, seconds=seconds)
                for name, front in running.items()
            }
    return report_flood(results, ctx=ctx)


def report_flood(results: Mapping[str, FloodResult], *, ctx: BenchContext) -> list[TargetCheck]:
    """The flood table; the probe's p99 against its target, the rest for information."""
    table, checks = [], []
    for name, result in results.items():
        p99 = result.probe.percentile(0.99)
        passed = result.probe.failures == 0 and p99 < HEALTHZ_P99_MAX_MS
        checks.append(
            TargetCheck(
                section="flood",
                case=f"{name}: /healthz p99 from another address",
                measured=f"{p99:.1f} ms, {result.probe.failures} failed",
                target=f"< {HEALTHZ_P99_MAX_MS:g} ms",
                passed=passed,
            )
        )
        checks.append(
            TargetCheck(
                section="flood",
                case=f"{name}: flood requests reaching gunicorn",
                measured=f"{result.reached_gunicorn:,} of {result.flood.requests:,}",
                target="-",
                passed=None,
            )
        )
        table.append(
            [
                name,
                f"{result.flood.requests:,}",
                f"{result.flood.requests_per_s:,.0f}",
                f"{result.flood.requests - result.flood.non_2xx:,}",
                f"{result.flood.non_2xx:,}",
                f"{result.reached_gunicorn:,}",
                f"{result.worker_cpu_s:.2f} s ({result.worker_cpu_s / result.seconds:.0%})",
                f"{len(result.probe.latencies_ms)}",
                f"{result.probe.percentile(0.5):.2f}",
                f"{p99:.2f}",
                f"{max(result.probe.connect_ms, default=float('nan')):.2f}",
                str(result.probe.failures),
            ]
        )
    print_table(
        title=(
            f"== flood: wrk -c{FLOOD_CONNECTIONS} -t2 from 127.0.0.1 for {flood_seconds(ctx):g} s, "
            "shipped nginx shield and app budgets (Redis db 12, log on PostgreSQL); /healthz from "
            f"{PROBE_SOURCE} every {PROBE_INTERVAL_S * 1000:g} ms; gunicorn sync x{ctx.workers}"
        ),
        headers=[
            "front",
            "flood requests",
            "req/s",
            "2xx",
            "non-2xx",
            "reached gunicorn",
            "worker CPU (of 1 core)",
            "probes",
            "probe p50 ms",
            "probe p99 ms",
            "slowest connect ms",
            "probe failures",
        ],
        rows=table,
    )
    return checks
