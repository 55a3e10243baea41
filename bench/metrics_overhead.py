"""What metrics and structured logs cost the app path: gunicorn with them on and off, side by side.

`.venv/bin/python bench/metrics_overhead.py [--n 10] [--rounds 5] [--duration 3]`
starts two gunicorns as deployed (deploy/gunicorn.conf.py, through
deploy/processes.py), the same but for FIB_METRICS and FIB_LOG_FORMAT
(`on`: metrics in multiprocess mode and JSON lines, gunicorn's access log
included; `off`: no metrics middleware, text lines), loads them in
alternating wrk rounds and prints a table with the on/off throughput ratio;
the budget is a ratio of at least 0.90. `--limiter` adds the rate limiter
(Redis database 13) to both. bench/run.py can call `section(load)` for its
summary.

A second opinion that a busy machine cannot skew: `--instructions on|off`
only calls the WSGI app in-process (metrics in multiprocess mode, as in a
worker) inside `functools.reduce`, for callgrind:

    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=functools_reduce \\
        .venv/bin/python bench/metrics_overhead.py --instructions on --requests 1000

instructions per request = the `totals:` line of callgrind.out.<pid> / 1000. It
leaves out gunicorn's access log line (written by gunicorn, not the app):
`--instructions access-text|access-json` formats 1000 of those instead, with
gunicorn's text formatter or ours (deploy/gunicorn_logging.py).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import runpy
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path

from hotspots import call, load_app
from loadgen import LoadSettings, alternate, warm_up
from report import LOAD_HEADERS, TargetCheck, load_cells, print_table, ratio_check
from sections import LIMITER_OFF, LIMITER_ON, LOG_OFF
from servers import PROJECT_DIR, base_environment

sys.path.insert(0, str(PROJECT_DIR))
from deploy import processes  # noqa: E402 - needs the project on the path

# The budget of issue #11: metrics and structured logs cost at most 10% of the app path.
MIN_RATIO = 0.90
SECTION = "metrics+logs"
ON = {"FIB_METRICS": "true", "FIB_LOG_FORMAT": "json"}
# run.py's limiter settings, in this benchmark's own Redis database and keys.
LIMITER = {
    **LIMITER_ON,
    "REDIS_URL": "redis://127.0.0.1:6379/13",
    "FIB_CACHE_KEY_PREFIX": "bench-metrics",
}
OFF = {"FIB_METRICS": "false", "FIB_LOG_FORMAT": "text"}


@contextmanager
def deployed_gunicorn(
    *, name: str, settings: Mapping[str, str], workers: int, work_dir: Path
) -> Iterator[str]:
    """gunicorn as deployed with `settings` and its access log in a file; yields its URL."""
    port = processes.free_port()
    env = base_environment(
        {
            **settings,
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "GUNICORN_WORKERS": str(workers),
            "GUNICORN_ACCESS_LOG": str(work_dir / f"access-{name}.log"),
            "GUNICORN_LOG_LEVEL": "warning",
            # No recycling in the middle of a round. The metrics directory is the
            # deployed default: one per bind address, in /dev/shm.
            "GUNICORN_MAX_REQUESTS": "0",
        }
    )
    process = processes.start_gunicorn(env=env, log_path=work_dir / f"gunicorn-{name}.out")
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            processes.wait_until_ready(f"{url}/healthz", process=process, timeout_seconds=60)
        except RuntimeError:
            sys.stderr.write((work_dir / f"gunicorn-{name}.out").read_text()[-3000:])
            raise
        yield url
    finally:
        processes.stop_gunicorn(process)


def section(
    load: LoadSettings, *, n: int = 10, workers: int = 2, limiter: bool = False
) -> TargetCheck:
    """Measure on against off in alternating rounds, print the table, return the ratio check."""
    common = {**(LIMITER if limiter else LIMITER_OFF), **LOG_OFF}
    with (
        tempfile.TemporaryDirectory(prefix="fibonacci-bench-metrics-") as work,
        ExitStack() as stack,
    ):
        urls = {
            name: stack.enter_context(
                deployed_gunicorn(
                    name=name, settings={**common, **settings}, workers=workers, work_dir=Path(work)
                )
            )
            + f"/api/v1/fibonacci/?n={n}"
            for name, settings in (("off", OFF), ("on", ON))
        }
        warm_up(urls=list(urls.values()), load=load)
        results = alternate(urls=urls, load=load)
    ratio = results["on"].requests_per_s / results["off"].requests_per_s
    case = f"n={n}" + (", limiter" if limiter else "")
    print_table(
        title=(
            f"Metrics and JSON logs on vs off ({case}; {workers} workers, "
            f"best of {load.rounds} x {load.duration_s:g} s, {load.connections} connections)"
        ),
        headers=["config", *LOAD_HEADERS, "vs off"],
        rows=[
            ["off (FIB_METRICS=false, text logs)", *load_cells(results["off"]), "1.00"],
            ["on (metrics, JSON logs)", *load_cells(results["on"]), f"{ratio:.2f}"],
        ],
    )
    return ratio_check(section=SECTION, case=case, ratio=ratio, minimum=MIN_RATIO)


def count_instructions(*, metrics_on: bool, n: int, requests: int) -> None:
    """The app in-process, metrics in multiprocess mode or off; only the requests in reduce()."""
    with tempfile.TemporaryDirectory(prefix="fibonacci-bench-metrics-") as directory:
        settings = {**LIMITER_OFF, **LOG_OFF, **(ON if metrics_on else OFF)}
        if metrics_on:
            settings["PROMETHEUS_MULTIPROC_DIR"] = directory
        app = load_app(settings)
        os.environ.update(settings)  # load_app set the environment before importing
        for _ in range(200):
            call(app, n)
        # The one call of functools.reduce in a request's life: callgrind's toggle.
        functools.reduce(lambda _, __: call(app, n), range(requests), None)


def count_access_line_instructions(*, json_lines: bool, lines: int) -> None:
    """gunicorn's access line for one API request, formatted `lines` times inside reduce()."""
    from gunicorn.glogging import SafeAtoms

    from deploy.gunicorn_logging import PlainAtoms
    from fibproject.logging_config import AccessLogJsonFormatter

    # What gunicorn's atoms() gives for a request through nginx (the environ's entries too).
    atoms: dict[str, object] = {
        "h": "127.0.0.1", "l": "-", "u": "-", "t": "[03/Dec/2026:14:10:51 +0000]",
        "r": "GET /api/v1/fibonacci/?n=10 HTTP/1.1", "s": "200", "m": "GET",
        "U": "/api/v1/fibonacci/", "q": "n=10", "H": "HTTP/1.1", "b": "132", "B": 132,
        "f": "-", "a": "wrk", "T": 0, "D": 1243, "M": 1, "L": "0.001243", "p": "<4242>",
        "{host}i": "127.0.0.1", "{x-real-ip}i": "203.0.113.9",
        "{x-request-id}i": "0f" * 16, "{x-request-id}o": "0f" * 16,
        "{content-type}o": "application/json",
        **{f"{{wsgi_{index}}}e": "x" for index in range(30)},
    }  # fmt: skip
    saved = dict(os.environ)
    try:  # the format as deployed; metrics off, so reading the file creates nothing
        os.environ["FIB_METRICS"] = "false"
        text_format = str(runpy.run_path(str(processes.GUNICORN_CONF))["access_log_format"])
    finally:
        os.environ.clear()
        os.environ.update(saved)
    formatter = AccessLogJsonFormatter() if json_lines else logging.Formatter("%(message)s")
    wrap = PlainAtoms if json_lines else SafeAtoms

    def one(*_: object) -> None:
        record = logging.LogRecord("gunicorn.access", 20, "", 0, text_format, (wrap(atoms),), None)
        formatter.format(record)

    for _ in range(100):
        one()
    functools.reduce(one, range(lines), None)


def main(argv: list[str]) -> int:
    """Run the comparison (or the callgrind mode) and print the verdict."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per round")
    parser.add_argument("--connections", type=int, default=0, help="default: 2 per worker")
    parser.add_argument("--limiter", action="store_true", help="rate limiter on (Redis)")
    parser.add_argument(
        "--instructions",
        choices=("on", "off", "access-text", "access-json"),
        help="callgrind mode (see above)",
    )
    parser.add_argument("--requests", type=int, default=1000, help="with --instructions")
    args = parser.parse_args(argv)
    if args.instructions in ("on", "off"):
        count_instructions(metrics_on=args.instructions == "on", n=args.n, requests=args.requests)
        return 0
    if args.instructions:
        count_access_line_instructions(
            json_lines=args.instructions == "access-json", lines=args.requests
        )
        return 0
    load = LoadSettings(
        duration_s=args.duration,
        connections=args.connections or 2 * args.workers,
        threads=2,
        rounds=args.rounds,
    )
    check = section(load, n=args.n, workers=args.workers, limiter=args.limiter)
    print(f"\n{check.section} {check.case}: on/off {check.measured}", end=" ")
    print(f"(target {check.target}) {check.verdict}")
    return 0 if check.passed is not False else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
