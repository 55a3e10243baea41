"""The whole stack through nginx, each row's throughput as a share of nginx serving a file.

Rows, all behind deploy/nginx.conf in one run: nginx serving the captured
bytes as a static file; the bare callable serving them; a minimal DRF
ViewSet (bench/minimal_drf.py, the floor for a DRF request cycle); the app
without limiter and log (`app`, its own Python path: what it does for a
request the edge has already counted and logs); the full app (limiter on
Redis, log on PostgreSQL), today's path without the edge; and the edge in
front of the full app, counters in Redis and in nginx's shared memory
(bench/edge_rows.py), with its log shipped. Then: cache misses (every request
a new URL), the same rows with `Accept-Encoding: gzip` (against the gzipped
bytes as a file), and one client alone (wrk -c1 -t1: latency, not
throughput). `frontend.py` puts nginx in front.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edge_rows import EDGE_STORES, edge_fronts
from frontend import RAISED_SHIELD, STATIC, STATIC_GZIP, FrontURLs, StaticBodies, behind_nginx
from loadgen import WrkResult, alternate, run_wrk, warm_up
from report import (
    LOAD_HEADERS,
    Comparison,
    TargetCheck,
    load_cells,
    print_table,
    ratio_check,
    report_versus_static,
)
from responses import SIZES, capture, fetch_gzip, verify_same, write_gzipped
from sections import (
    BENCH_DATABASE_URL,
    BENCH_REDIS_URL,
    LIMITER_OFF,
    LIMITER_ON,
    LOG_OFF,
    LOG_ON,
    BenchContext,
    app_server,
    bare_server,
    minimal_drf_server,
    prepare_database,
    require_redis,
)
from servers import ProcessMemory, workers_memory

STACK_TARGETS = {10: 0.4, 1000: None, 10000: 0.8}
# The app's own path against a plain DRF ViewSet with the same answer: the honest floor.
DRF_TARGETS = {10: 0.9, 1000: 0.9, 10000: 0.9}
MEMORY_MAX_GROWTH = 0.05
FULL_SETTINGS = {**LIMITER_ON, **LOG_ON, "FIB_TRUSTED_PROXIES": "127.0.0.1"}
APP_SETTINGS = {**LIMITER_OFF, **LOG_OFF, "FIB_TRUSTED_PROXIES": "127.0.0.1"}
GZIP_HEADER = "Accept-Encoding: gzip"
# n = 10 is below every compression floor (Django's 200 bytes, nginx's 1024): the same bytes.
GZIP_SIZES = (1000, 10000)
# wrk's script for the miss rows: every request a window nobody asked for yet.
MISS_SCRIPT = Path(__file__).resolve().parent / "wrk_new_window.lua"
# A miss through the edge against the full app without it (target: no slower, within noise).
MISS_MIN_RATIO = 0.9

EDGE_NAMES = tuple(EDGE_STORES)
# A row's share of the static file's throughput: name -> n -> minimum.
STATIC_SHARE_TARGETS: Mapping[str, Mapping[int, float]] = {
    "edge-redis": {10: 0.35, 1000: 0.6, 10000: 0.85},
    "edge-shm": {10: 0.6, 1000: 0.7, 10000: 0.85},
}
# A row's single-client p50 as a multiple of the static file's: name -> maximum.
SINGLE_CLIENT_P50_MAX: Mapping[str, float] = dict.fromkeys(EDGE_NAMES, 3.0)

THROUGHPUT_ROWS = (STATIC, "bare", "drf", "app", "full", *EDGE_NAMES)
GZIP_ROWS = ("full", *EDGE_NAMES)
MISS_ROWS = ("full", *EDGE_NAMES)
SINGLE_CLIENT_ROWS = (STATIC, "app", "full", *EDGE_NAMES)


def stack_section(ctx: BenchContext) -> list[TargetCheck]:
    """Every row through nginx against the static file; misses; gzip; one client; memory."""
    require_redis(BENCH_REDIS_URL)
    prepare_database(BENCH_DATABASE_URL)
    responses_dir = ctx.scratch / "responses-stack"
    with (
        app_server(ctx, name="full", settings=FULL_SETTINGS) as full,
        app_server(ctx, name="app", settings=APP_SETTINGS) as app,
    ):
        content_type = capture(base_url=full.base_url, sizes=SIZES, directory=responses_dir)
        write_gzipped(directory=responses_dir, sizes=SIZES)
        static = StaticBodies(root=responses_dir, content_type=content_type, sizes=SIZES)
        with (
            bare_server(ctx, name="bare", responses_dir=responses_dir) as bare,
            minimal_drf_server(ctx, name="drf") as drf,
            edge_fronts(
                scratch=ctx.scratch, upstream=full, app_settings=FULL_SETTINGS, shield=RAISED_SHIELD
            ) as edges,
            behind_nginx(
                scratch=ctx.scratch, upstreams=[bare, drf, app, full], fronts=edges, static=static
            ) as urls,
        ):
            for name in THROUGHPUT_ROWS:
                if name != "full":
                    verify_same(expected=urls["full"], actual=urls[name])
            warm_up(urls=[urls[name][10] for name in THROUGHPUT_ROWS], load=ctx.load)
            results = {
                n: alternate(urls={name: urls[name][n] for name in THROUGHPUT_ROWS}, load=ctx.load)
                for n in SIZES
            }
            misses = alternate(
                urls={name: urls[name][10] for name in MISS_ROWS}, load=ctx.load, script=MISS_SCRIPT
            )
            gzip_urls = [STATIC_GZIP, *GZIP_ROWS]
            encodings = {
                n: {name: fetch_gzip(urls[name][n]) for name in gzip_urls} for n in GZIP_SIZES
            }
            gzipped = {
                n: alternate(
                    urls={name: urls[name][n] for name in gzip_urls},
                    load=ctx.load,
                    headers=[GZIP_HEADER],
                )
                for n in GZIP_SIZES
            }
            single = single_client(urls, rows=SINGLE_CLIENT_ROWS, ctx=ctx)
            memory = {"full": workers_memory(full), "bare": workers_memory(bare)}
    checks = report_stack(results, ctx=ctx)
    checks += report_misses(misses, ctx=ctx)
    checks += report_gzip(results, gzipped, encodings, ctx=ctx)
    checks += report_single_client(single, ctx=ctx)
    report_peak_memory(memory)
    return checks + peak_memory_checks(memory)


def report_misses(misses: Mapping[str, WrkResult], *, ctx: BenchContext) -> list[TargetCheck]:
    """Cache misses through the edge against the full app without it, n=10."""
    table, checks = [], []
    for name in MISS_ROWS:
        result = misses[name]
        ratio = result.requests_per_s / misses["full"].requests_per_s
        cell = "-"
        if name != "full":
            check = ratio_check(
                section="miss", case=f"{name}/full n=10", ratio=ratio, minimum=MISS_MIN_RATIO
            )
            checks.append(check)
            cell = f"{ratio:.2f} (target {check.target}) {check.verdict}"
        table.append([name, *load_cells(result), cell])
    print_table(
        title=(
            "== miss: every request a window not asked for before (n from 10 to 99, a new "
            f"offset each: {MISS_SCRIPT.name}); best of {ctx.load.rounds} alternating rounds"
        ),
        headers=["behind nginx", *LOAD_HEADERS, "/full"],
        rows=table,
    )
    return checks


def single_client_seconds(ctx: BenchContext) -> float:
    """One client's round: a latency needs fewer seconds than a throughput."""
    return max(1.0, ctx.load.duration_s - 1)


def single_client(
    urls: FrontURLs, *, rows: Sequence[str], ctx: BenchContext
) -> dict[int, dict[str, WrkResult]]:
    """One connection, one thread: latency without queueing, best of alternating rounds."""
    alone = dataclasses.replace(
        ctx.load, connections=1, threads=1, duration_s=single_client_seconds(ctx)
    )
    return {n: alternate(urls={name: urls[name][n] for name in rows}, load=alone) for n in SIZES}


def peak_memory_checks(memory: Mapping[str, Sequence[ProcessMemory]]) -> list[TargetCheck]:
    """The largest worker peak RSS per server, for the summary (information, no target)."""
    return [
        TargetCheck(
            section="stack",
            case=f"peak RSS per worker, {name}",
            measured=f"{max(worker.hwm_kib for worker in workers) / 1024:.0f} MiB",
            target="-",
            passed=None,
        )
        for name, workers in memory.items()
        if workers
    ]


def report_stack(
    results: Mapping[int, Mapping[str, WrkResult]], *, ctx: BenchContext
) -> list[TargetCheck]:
    """Print the stack table (every row as a share of the static file); its checks."""
    return report_versus_static(
        section="stack",
        title=(
            "== stack: through nginx, as a share of nginx serving the same bytes as a file: "
            "bare callable / minimal DRF ViewSet / app (limiter and log off) / full app "
            f"(limiter on Redis, log on PostgreSQL) / the edge ({', '.join(EDGE_NAMES)}); "
            f"gunicorn sync x{ctx.workers} --preload; best of {ctx.load.rounds} alternating rounds"
        ),
        results=results,
        rows=THROUGHPUT_ROWS,
        static=STATIC,
        comparisons=[
            Comparison(subject="app", baseline="drf", targets=DRF_TARGETS),
            Comparison(subject="full", baseline="bare", targets=STACK_TARGETS),
        ],
        static_targets=STATIC_SHARE_TARGETS,
    )


def report_gzip(
    identity: Mapping[int, Mapping[str, WrkResult]],
    gzipped: Mapping[int, Mapping[str, WrkResult]],
    encodings: Mapping[int, Mapping[str, Any]],
    *,
    ctx: BenchContext,
) -> list[TargetCheck]:
    """Rows without and with `Accept-Encoding: gzip`, as shares of the file of the same bytes."""
    table = []
    checks = []
    for n in GZIP_SIZES:
        for name in GZIP_ROWS:
            plain = identity[n][name]
            compressed = gzipped[n][name]
            sent = encodings[n][name]
            plain_share = plain.requests_per_s / identity[n][STATIC].requests_per_s
            gzip_share = compressed.requests_per_s / gzipped[n][STATIC_GZIP].requests_per_s
            table.append(
                [
                    f"n={n}",
                    name,
                    f"{plain.requests_per_s:,.0f}",
                    f"{plain_share:.3f}",
                    f"{sent.content_encoding} {sent.body_bytes / 1000:,.1f} KB",
                    f"{compressed.requests_per_s:,.0f}",
                    f"{compressed.p99_ms:.2f}",
                    f"{gzip_share:.3f}",
                    f"{compressed.requests_per_s / plain.requests_per_s:.2f}",
                ]
            )
            checks.append(
                TargetCheck(
                    section="gzip",
                    case=f"{name} gzip/identity req/s n={n}",
                    measured=f"{compressed.requests_per_s / plain.requests_per_s:.2f}",
                    target="-",
                    passed=None,
                )
            )
        static_gz = gzipped[n][STATIC_GZIP]
        table.append(
            [
                f"n={n}",
                f"{STATIC} / {STATIC_GZIP}",
                f"{identity[n][STATIC].requests_per_s:,.0f}",
                "1.000",
                f"file {encodings[n][STATIC_GZIP].body_bytes / 1000:,.1f} KB",
                f"{static_gz.requests_per_s:,.0f}",
                f"{static_gz.p99_ms:.2f}",
                "1.000",
                f"{static_gz.requests_per_s / identity[n][STATIC].requests_per_s:.2f}",
            ]
        )
    print_table(
        title=(
            "== gzip: the same rows without and with `Accept-Encoding: gzip` (wrk -H); the share "
            f"is of the file of the same bytes ({STATIC} for identity, {STATIC_GZIP}: the body "
            f"gzipped as a file); best of {ctx.load.rounds} alternating rounds"
        ),
        headers=[
            "n",
            "behind nginx",
            "identity req/s",
            f"/{STATIC}",
            "gzip asked: sent as",
            "gzip req/s",
            "gzip p99 ms",
            f"/{STATIC_GZIP}",
            "gzip/identity",
        ],
        rows=table,
    )
    return checks


def report_single_client(
    single: Mapping[int, Mapping[str, WrkResult]], *, ctx: BenchContext
) -> list[TargetCheck]:
    """p50 and p99 of one client alone, and p50 as a multiple of the static file's."""
    table, checks = [], []
    for n, by_name in single.items():
        for name, result in by_name.items():
            multiple = result.p50_ms / by_name[STATIC].p50_ms
            maximum = SINGLE_CLIENT_P50_MAX.get(name)
            cell = f"{multiple:.1f}x"
            if maximum is not None:
                check = TargetCheck(
                    section="single client",
                    case=f"{name} p50/{STATIC} p50 n={n}",
                    measured=f"{multiple:.1f}x",
                    target=f"<= {maximum:g}x",
                    passed=multiple <= maximum,
                )
                checks.append(check)
                cell += f" (<= {maximum:g}x) {check.verdict}"
            table.append(
                [
                    f"n={n}",
                    name,
                    f"{result.p50_ms:.3f}",
                    f"{result.p99_ms:.3f}",
                    f"{result.requests_per_s:,.0f}",
                    cell,
                ]
            )
    print_table(
        title=(
            f"== single client: wrk -c1 -t1, {single_client_seconds(ctx):g} s rounds, "
            f"best of {ctx.load.rounds} alternating rounds"
        ),
        headers=["n", "behind nginx", "p50 ms", "p99 ms", "req/s", f"p50/{STATIC} p50"],
        rows=table,
    )
    return checks


def report_peak_memory(memory: Mapping[str, Sequence[ProcessMemory]]) -> None:
    """Per-worker peak and current RSS (shared pages counted in each) and PSS."""
    rows = [
        [
            name,
            str(worker.pid),
            f"{worker.hwm_kib / 1024:.1f}",
            f"{worker.rss_kib / 1024:.1f}",
            f"{worker.pss_kib / 1024:.1f}",
        ]
        for name, workers in memory.items()
        for worker in workers
    ]
    print_table(
        title="== stack: gunicorn worker memory after the stack runs (MiB)",
        headers=["server", "worker pid", "peak RSS (VmHWM)", "RSS", "PSS"],
        rows=rows,
    )


def drive(*, url: str, requests: int, ctx: BenchContext) -> int:
    """Send at least `requests` requests to `url` in wrk runs; how many were sent."""
    sent = 0
    chunk_s = max(2.0, min(10.0, ctx.load.duration_s * 2))
    while sent < requests:
        sent += run_wrk(
            url=url, duration_s=chunk_s, connections=ctx.load.connections, threads=ctx.load.threads
        ).requests
    return sent


def memory_section(ctx: BenchContext) -> list[TargetCheck]:
    """RSS per full-stack worker before and after many requests: does it stay flat?"""
    require_redis(BENCH_REDIS_URL)
    prepare_database(BENCH_DATABASE_URL)
    with (
        app_server(ctx, name="memory", settings=FULL_SETTINGS) as full,
        behind_nginx(scratch=ctx.scratch, upstreams=[full]) as urls,
    ):
        url = urls["memory"][10]
        warm_up(urls=[url, urls["memory"][1000]], load=ctx.load)
        before = workers_memory(full)
        sent = drive(url=url, requests=ctx.memory_requests, ctx=ctx)
        after = workers_memory(full)
    return report_memory(before, after, sent)


def report_memory(
    before: Sequence[ProcessMemory], after: Sequence[ProcessMemory], sent: int
) -> list[TargetCheck]:
    """Print RSS before/after per worker; the flatness check (worst worker)."""
    after_by_pid = {worker.pid: worker for worker in after}
    rows, growths = [], []
    for worker in before:
        later = after_by_pid.get(worker.pid)
        if later is None:
            rows.append([str(worker.pid), f"{worker.rss_kib / 1024:.1f}", "exited", "-"])
            continue
        growth = later.rss_kib / worker.rss_kib - 1
        growths.append(growth)
        rows.append(
            [
                str(worker.pid),
                f"{worker.rss_kib / 1024:.1f}",
                f"{later.rss_kib / 1024:.1f}",
                f"{growth:+.1%}",
            ]
        )
    print_table(
        title=f"== memory: full stack worker RSS (MiB) after warm-up and after {sent:,} "
        "more requests (n=10, through nginx)",
        headers=["worker pid", "RSS before", "RSS after", "change"],
        rows=rows,
    )
    worst = max(growths, key=abs) if growths else float("nan")
    return [
        TargetCheck(
            section="memory",
            case=f"worst worker RSS change, {sent:,} requests",
            measured=f"{worst:+.1%}",
            target=f"within {MEMORY_MAX_GROWTH:.0%}",
            passed=bool(growths) and abs(worst) <= MEMORY_MAX_GROWTH,
        )
    ]
