"""The whole stack through nginx: full app, bare callable and a static file; worker memory.

The full app runs with the rate limiter on Redis and the request log on
PostgreSQL; the bare callable and the static file serve the bytes captured
from it. `frontend.py` puts deploy/nginx.conf in front.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from frontend import STATIC, StaticBodies, behind_nginx
from loadgen import WrkResult, alternate, run_wrk, warm_up
from report import (
    TargetCheck,
    print_table,
    report_ratio_table,
)
from responses import SIZES, capture, verify_same
from sections import (
    BENCH_DATABASE_URL,
    BENCH_REDIS_URL,
    LIMITER_ON,
    LOG_ON,
    BenchContext,
    app_server,
    bare_server,
    prepare_database,
    require_redis,
)
from servers import ProcessMemory, workers_memory

STACK_TARGETS = {10: 0.4, 1000: None, 10000: 0.8}
MEMORY_MAX_GROWTH = 0.05
FULL_SETTINGS = {**LIMITER_ON, **LOG_ON, "FIB_TRUSTED_PROXIES": "127.0.0.1"}


def stack_section(ctx: BenchContext) -> list[TargetCheck]:
    """Full app, bare callable and static file, all through nginx; peak worker memory."""
    require_redis(BENCH_REDIS_URL)
    prepare_database(BENCH_DATABASE_URL)
    responses_dir = ctx.scratch / "responses-stack"
    with app_server(ctx, name="full", settings=FULL_SETTINGS) as full:
        content_type = capture(base_url=full.base_url, sizes=SIZES, directory=responses_dir)
        static = StaticBodies(root=responses_dir, content_type=content_type, sizes=SIZES)
        with (
            bare_server(ctx, name="bare", responses_dir=responses_dir) as bare,
            behind_nginx(scratch=ctx.scratch, upstreams=[full, bare], static=static) as urls,
        ):
            for name in ("bare", STATIC):
                verify_same(expected=urls["full"], actual=urls[name])
            warm_up(urls=[by_size[10] for by_size in urls.values()], load=ctx.load)
            results = {
                n: alternate(urls={name: urls[name][n] for name in urls}, load=ctx.load)
                for n in SIZES
            }
            memory = {"full": workers_memory(full), "bare": workers_memory(bare)}
    checks = report_stack(results, ctx)
    report_peak_memory(memory)
    return checks + peak_memory_checks(memory)


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
    results: Mapping[int, Mapping[str, WrkResult]], ctx: BenchContext
) -> list[TargetCheck]:
    """Print the stack table; the full/bare ratio checks."""
    return report_ratio_table(
        section="stack",
        title=(
            "== stack: through nginx: static file / bare callable / full app "
            f"(limiter on Redis, log on PostgreSQL), gunicorn sync x{ctx.workers} --preload; "
            f"best of {ctx.load.rounds} alternating rounds"
        ),
        results=results,
        servers=(STATIC, "bare", "full"),
        server_header="behind nginx",
        targets=STACK_TARGETS,
    )


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
