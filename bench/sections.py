"""The gunicorn-only sections: the app against a bare callable, limiter on/off, log on/off.

Each section starts what it compares side by side (same gunicorn flags, same
worker count), loads them in alternating rounds, prints a table and returns
its target checks for the summary.
"""

from __future__ import annotations

import functools
import subprocess
import urllib.request
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
from loadgen import LoadSettings, WrkResult, alternate, warm_up
from report import (
    LOAD_HEADERS,
    TargetCheck,
    load_cells,
    print_table,
    ratio_check,
    report_ratio_table,
)
from responses import SIZES, capture, url_path, verify_same
from servers import (
    APP_SPEC,
    BARE_SPEC,
    MINIMAL_DRF_SPEC,
    PROJECT_DIR,
    VENV_BIN,
    RunningServer,
    base_environment,
    gunicorn,
)

BENCH_REDIS_URL = "redis://127.0.0.1:6379/12"
BENCH_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/bench"
APP_TARGETS = {10: 0.45, 1000: 0.55, 10000: 0.8}
LIMITER_MAX_COST = 0.15
LOG_MIN_RATIO = 0.9

# Limits no benchmark can reach, so the limiter does all its work and never answers 429.
HUGE_LIMITS = {"FIB_RATE_LIMIT": "100000000/m", "FIB_RATE_LIMIT_LARGE": "100000000/m"}
LIMITER_OFF = {"FIB_RATE_LIMIT_ENABLED": "false"}
LIMITER_ON = {
    "FIB_RATE_LIMIT_ENABLED": "true",
    "REDIS_URL": BENCH_REDIS_URL,
    "FIB_CACHE_KEY_PREFIX": "bench",
    **HUGE_LIMITS,
}
LOG_OFF = {"FIB_REQUEST_LOG": "false"}
LOG_ON = {"FIB_REQUEST_LOG": "true", "DATABASE_URL": BENCH_DATABASE_URL}


@dataclass(frozen=True)
class BenchContext:
    """What every section needs: worker count, load settings, a scratch directory."""

    workers: int
    load: LoadSettings
    scratch: Path
    memory_requests: int


def app_server(
    ctx: BenchContext, *, name: str, settings: Mapping[str, str]
) -> AbstractContextManager[RunningServer]:
    """gunicorn serving fibproject.wsgi with `settings` on top of production defaults."""
    return gunicorn(
        name=name,
        app_spec=APP_SPEC,
        workers=ctx.workers,
        env=base_environment(settings),
        log_dir=ctx.scratch,
        ready_path="/healthz",
    )


def bare_server(
    ctx: BenchContext, *, name: str, responses_dir: Path
) -> AbstractContextManager[RunningServer]:
    """gunicorn serving bench/bare_app.py with the same flags as the app."""
    return gunicorn(
        name=name,
        app_spec=BARE_SPEC,
        workers=ctx.workers,
        env=base_environment({"BENCH_RESPONSES_DIR": str(responses_dir)}),
        log_dir=ctx.scratch,
    )


def minimal_drf_server(ctx: BenchContext, *, name: str) -> AbstractContextManager[RunningServer]:
    """gunicorn serving bench/minimal_drf.py (a plain DRF ViewSet), the app's flags."""
    return gunicorn(
        name=name,
        app_spec=MINIMAL_DRF_SPEC,
        workers=ctx.workers,
        env=base_environment({}),
        log_dir=ctx.scratch,
    )


def header_present(url: str, header: str) -> bool:
    """Whether a GET of `url` answers with `header` (to tell if a feature is switched on)."""
    with urllib.request.urlopen(url, timeout=30.0) as response:
        return response.headers.get(header) is not None


@functools.cache  # once per run, however many sections need it
def require_redis(url: str) -> None:
    """Raise a clear error unless Redis answers at `url`."""
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as error:
        raise RuntimeError(f"Redis at {url} does not answer ({error})") from error


@functools.cache  # once per run: a migrate is seconds
def prepare_database(url: str) -> None:
    """Create the benchmark database if missing, then run the project's migrations on it."""
    parts = urlsplit(url)
    database = parts.path.lstrip("/")
    maintenance = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    with psycopg.connect(maintenance, autocommit=True, connect_timeout=5) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if exists is None:
            connection.execute(f'CREATE DATABASE "{database}"')
    migrate = subprocess.run(
        [str(VENV_BIN / "python"), "manage.py", "migrate", "--no-input"],
        cwd=PROJECT_DIR,
        env=base_environment({"DATABASE_URL": url}),
        capture_output=True,
        text=True,
        check=False,
    )
    if migrate.returncode != 0:
        raise RuntimeError(f"manage.py migrate failed on {url}:\n{migrate.stderr[-2000:]}")


def app_section(ctx: BenchContext) -> list[TargetCheck]:
    """fibproject.wsgi against the bare callable, n = 10, 1000, 10000."""
    responses_dir = ctx.scratch / "responses-app"
    settings = {**LIMITER_OFF, **LOG_OFF}
    with app_server(ctx, name="app", settings=settings) as app:
        capture(base_url=app.base_url, sizes=SIZES, directory=responses_dir)
        with bare_server(ctx, name="bare", responses_dir=responses_dir) as bare:
            verify_same(
                expected={n: app.base_url + url_path(n) for n in SIZES},
                actual={n: bare.base_url + url_path(n) for n in SIZES},
            )
            warm_up(urls=[app.base_url + url_path(10), bare.base_url + url_path(10)], load=ctx.load)
            results = {
                n: alternate(
                    urls={"bare": bare.base_url + url_path(n), "app": app.base_url + url_path(n)},
                    load=ctx.load,
                )
                for n in SIZES
            }
    return report_app(results, ctx)


def report_app(
    results: Mapping[int, Mapping[str, WrkResult]], ctx: BenchContext
) -> list[TargetCheck]:
    """Print the app section's table; its ratio checks."""
    return report_ratio_table(
        section="app",
        title=(
            f"== app: fibproject.wsgi (limiter and request log off) vs bare WSGI callable, "
            f"gunicorn sync x{ctx.workers} --preload; best of {ctx.load.rounds} alternating rounds"
        ),
        results=results,
        servers=("bare", "app"),
        server_header="server",
        targets=APP_TARGETS,
    )


def on_off_section(
    ctx: BenchContext,
    *,
    section: str,
    on: Mapping[str, str],
    switch_off: Mapping[str, str],
    marker_header: str,
) -> tuple[WrkResult, WrkResult, bool]:
    """The app with a feature on, and with `switch_off` on top, side by side at n=10.

    Returns (on, off, whether the feature was seen on).
    """
    off = {**on, **switch_off}
    with (
        app_server(ctx, name=f"{section}-on", settings=on) as server_on,
        app_server(ctx, name=f"{section}-off", settings=off) as server_off,
    ):
        urls = {"off": server_off.base_url + url_path(10), "on": server_on.base_url + url_path(10)}
        seen = header_present(urls["on"], marker_header)
        warm_up(urls=list(urls.values()), load=ctx.load)
        best = alternate(urls=urls, load=ctx.load)
    return best["on"], best["off"], seen


def print_on_off(
    *, title: str, on: WrkResult, off: WrkResult, seen: bool, marker_header: str, measure: str
) -> None:
    """The two rows of an on/off comparison, and whether the feature was visibly on."""
    print_table(
        title=title,
        headers=["case", *LOAD_HEADERS],
        rows=[["off", *load_cells(off)], ["on", *load_cells(on)]],
    )
    state = "present" if seen else "ABSENT: the feature seems not active yet, rows should match"
    print(f"{marker_header} header with the feature on: {state}")
    print(measure)


def limiter_section(ctx: BenchContext) -> list[TargetCheck]:
    """The rate limiter on (Redis) against off, n=10."""
    require_redis(BENCH_REDIS_URL)
    on, off, seen = on_off_section(
        ctx,
        section="limiter",
        on={**LIMITER_ON, **LOG_OFF},
        switch_off=LIMITER_OFF,
        marker_header="RateLimit-Policy",
    )
    cost = 1 - on.requests_per_s / off.requests_per_s
    passed = cost < LIMITER_MAX_COST
    print_on_off(
        title=f"== limiter: rate limiter on (Redis db 12, huge limits) vs off, n=10, "
        f"best of {ctx.load.rounds} alternating rounds",
        on=on,
        off=off,
        seen=seen,
        marker_header="RateLimit-Policy",
        measure=f"cost {cost:.1%} (target < {LIMITER_MAX_COST:.0%}) {'PASS' if passed else 'FAIL'}",
    )
    return [
        TargetCheck(
            section="limiter",
            case="cost n=10",
            measured=f"{cost:.1%}",
            target=f"< {LIMITER_MAX_COST:.0%}",
            passed=passed,
        )
    ]


def log_section(ctx: BenchContext) -> list[TargetCheck]:
    """The request log on (PostgreSQL) against off, n=10."""
    prepare_database(BENCH_DATABASE_URL)
    on, off, seen = on_off_section(
        ctx,
        section="log",
        on={**LOG_ON, **LIMITER_OFF},
        switch_off=LOG_OFF,
        marker_header="X-Request-ID",
    )
    ratio = on.requests_per_s / off.requests_per_s
    check = ratio_check(section="log", case="on/off n=10", ratio=ratio, minimum=LOG_MIN_RATIO)
    print_on_off(
        title=f"== log: request log on (PostgreSQL, database bench) vs off, n=10, "
        f"best of {ctx.load.rounds} alternating rounds",
        on=on,
        off=off,
        seen=seen,
        marker_header="X-Request-ID",
        measure=f"on/off {ratio:.2f} (target {check.target}) {check.verdict}",
    )
    return [check]
