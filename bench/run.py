"""`make bench`: throughput tables for the Fibonacci API against baselines, in one run.

Sections (all but `app` by default; `--sections` picks some, `--quick` is a smoke run):
  app      fibproject.wsgi vs a bare WSGI callable with the same bytes, gunicorn sync
  limiter  the app with the rate limiter on (Redis) vs off
  log      the app with the request log on (PostgreSQL) vs off
  stack    through nginx, as shares of nginx serving the same bytes as a file: bare
           callable, minimal DRF ViewSet, the app alone, the full app (and the edge's
           rows); the same with Accept-Encoding: gzip; one client alone; worker memory
  flood    wrk -c256 from one address with the shipped limits; /healthz from another
  memory   worker RSS before and after 30,000 requests through the full stack

It prints a report and exits 0 even when targets fail; non-zero only when a
section could not run (a server did not start, wrk is missing, ...).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from flood import flood_section
from loadgen import LoadSettings, WrkMissingError, require_wrk
from report import TargetCheck, print_summary
from sections import BenchContext, app_section, limiter_section, log_section
from servers import ServerStartError
from stack import memory_section, stack_section

from deploy.processes import gunicorn_setting

Section = Callable[[BenchContext], list[TargetCheck]]
SECTIONS: dict[str, Section] = {
    "app": app_section,
    "limiter": limiter_section,
    "log": log_section,
    "stack": stack_section,
    "flood": flood_section,
    "memory": memory_section,
}
# What `make bench` runs (about 6 minutes): the gunicorn-only app/bare table is asked for by name.
DEFAULT_SECTIONS = ("limiter", "log", "stack", "flood", "memory")
# Round length and count: the default sections take about 6 minutes with them.
DURATION_S = 3.0
ROUNDS = 2
MEMORY_REQUESTS = 30_000
QUICK_MEMORY_REQUESTS = 5_000


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run (~1 minute)")
    parser.add_argument(
        "--sections",
        default=",".join(DEFAULT_SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)} "
        f"(default: {','.join(DEFAULT_SECTIONS)})",
    )
    parser.add_argument(
        "--duration", type=float, help=f"seconds per measured round (default {DURATION_S:g})"
    )
    parser.add_argument(
        "--rounds", type=int, help=f"alternating rounds per comparison (default {ROUNDS})"
    )
    parser.add_argument("--connections", type=int, help="wrk connections (default 2 x workers)")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="gunicorn workers for every server (default: deploy/gunicorn.conf.py, 2 x cores + 1)",
    )
    return parser.parse_args(argv)


def chosen_sections(args: argparse.Namespace) -> list[str]:
    """Section names to run, in their canonical order."""
    wanted = {name.strip() for name in args.sections.split(",") if name.strip()}
    unknown = wanted - SECTIONS.keys()
    if unknown:
        raise SystemExit(
            f"unknown sections: {', '.join(sorted(unknown))}; pick from {', '.join(SECTIONS)}"
        )
    return [name for name in SECTIONS if name in wanted]


def load_settings(args: argparse.Namespace, workers: int) -> LoadSettings:
    """Round length, count and concurrency from the options (--quick shortens them)."""
    return LoadSettings(
        duration_s=args.duration or (1.0 if args.quick else DURATION_S),
        rounds=args.rounds or (2 if args.quick else ROUNDS),
        # Enough to keep every sync worker busy; more would only queue in the backlog.
        connections=args.connections or 2 * workers,
        threads=2,
    )


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def tool_version(command: list[str]) -> str:
    """First line a tool prints about its version."""
    try:
        completed = subprocess.run(command, capture_output=True, text=True, check=False, timeout=10)
    except OSError:
        return "not installed"
    return (completed.stdout + completed.stderr).strip().splitlines()[0]


def print_machine(ctx: BenchContext) -> None:
    """What the numbers were measured on, and with which settings."""
    versions = {
        name: importlib.metadata.version(name)
        for name in ("django", "djangorestframework", "gunicorn")
    }
    print("== Fibonacci API benchmark")
    print(f"date      {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"machine   nproc={os.cpu_count()}, {cpu_model()}, load average {os.getloadavg()}")
    print(
        f"python    {platform.python_version()}; "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
    )
    print(f"tools     {tool_version(['wrk', '--version'])}; {tool_version(['nginx', '-v'])}")
    print(
        f"settings  gunicorn sync workers={ctx.workers} --preload (app and baselines alike); "
        f"wrk {ctx.load.threads} threads, {ctx.load.connections} connections, "
        f"{ctx.load.duration_s:g} s rounds, best of {ctx.load.rounds} alternating rounds"
    )


def run_sections(names: list[str], ctx: BenchContext) -> tuple[list[TargetCheck], list[str]]:
    """Run each section; a section that fails is reported and the others still run."""
    checks: list[TargetCheck] = []
    errors: list[str] = []
    for name in names:
        started = time.monotonic()
        try:
            checks += SECTIONS[name](ctx)
        except (ServerStartError, RuntimeError, OSError, ValueError) as error:
            # The full message (with the server's log tail) goes to stderr; one line to the summary.
            errors.append(f"section {name}: {str(error).strip().splitlines()[-1]}")
            print(f"\nERROR in section {name}: {error}", file=sys.stderr)
        print(f"(section {name}: {time.monotonic() - started:.0f} s)")
    return checks, errors


def main(argv: list[str]) -> int:
    """Run the chosen sections and print the report; 0 unless something could not run."""
    args = parse_args(argv)
    try:
        require_wrk()
    except WrkMissingError as error:
        print(error, file=sys.stderr)
        return 2
    names = chosen_sections(args)
    workers = args.workers or gunicorn_setting("workers", os.environ)
    with tempfile.TemporaryDirectory(prefix="fib-bench-") as scratch:
        ctx = BenchContext(
            workers=workers,
            load=load_settings(args, workers),
            scratch=Path(scratch),
            memory_requests=QUICK_MEMORY_REQUESTS if args.quick else MEMORY_REQUESTS,
        )
        print_machine(ctx)
        checks, errors = run_sections(names, ctx)
    print_summary(checks, errors)
    print(f"\nload average at the end {os.getloadavg()}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
