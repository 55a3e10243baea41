"""Where a request's time goes: cProfile of fibproject.wsgi called in-process, no server.

`.venv/bin/python bench/hotspots.py [--n 10] [--requests 5000] [--limiter] [--log]`
calls the WSGI application directly with a minimal GET environ, as gunicorn
would, and prints the top functions by own time and by cumulative time. With
neither flag it profiles the configuration of run.py's "app" section.

With `--instructions` it only runs the requests, inside `functools.reduce`,
so that callgrind counts them and nothing else (not start-up, not warm-up),
which stays exact on a busy machine:

    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=functools_reduce \
        .venv/bin/python bench/hotspots.py --instructions --requests 1000

instructions per request = the `totals:` line of callgrind.out.<pid> / 1000.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import os
import pstats
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from sections import LIMITER_OFF, LIMITER_ON, LOG_OFF, LOG_ON
from servers import PROJECT_DIR, base_environment

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def request_environ(n: int) -> dict[str, Any]:
    """The WSGI environ of `GET /api/v1/fibonacci/?n=N` as wrk sends it through gunicorn."""
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/api/v1/fibonacci/",
        "QUERY_STRING": f"n={n}",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def call(app: WSGIApp, n: int) -> None:
    """One request through the app, consuming the body as a server would."""
    statuses: list[str] = []
    body = app(request_environ(n), lambda status, headers, *exc: statuses.append(status))
    for _ in body:
        pass
    close = getattr(body, "close", None)
    if close is not None:
        close()
    if not statuses or not statuses[0].startswith("200"):
        raise RuntimeError(f"request answered {statuses}")


def load_app(settings: dict[str, str]) -> WSGIApp:
    """Import fibproject.wsgi with the benchmark's environment."""
    os.environ.clear()
    os.environ.update(base_environment(settings))
    sys.path.insert(0, str(PROJECT_DIR))
    from fibproject.wsgi import application

    return application


def main(argv: list[str]) -> int:
    """Warm up, then profile `--requests` requests and print the top costs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--limiter", action="store_true", help="rate limiter on (Redis)")
    parser.add_argument("--log", action="store_true", help="request log on (PostgreSQL)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--instructions", action="store_true", help="only the requests, for callgrind (see above)"
    )
    args = parser.parse_args(argv)
    app = load_app(
        {**(LIMITER_ON if args.limiter else LIMITER_OFF), **(LOG_ON if args.log else LOG_OFF)}
    )
    for _ in range(200):
        call(app, args.n)
    if args.instructions:
        # The one call of functools.reduce in a request's life: callgrind's toggle.
        functools.reduce(lambda _, __: call(app, args.n), range(args.requests), None)
        return 0
    started = time.perf_counter()
    for _ in range(args.requests):
        call(app, args.n)
    plain_us = (time.perf_counter() - started) / args.requests * 1e6
    print(
        f"unprofiled: {plain_us:.0f} us per request (n={args.n}), "
        f"{1e6 / plain_us:,.0f} req/s on one core"
    )
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(args.requests):
        call(app, args.n)
    profiler.disable()
    stats = pstats.Stats(profiler).strip_dirs()
    for order in ("tottime", "cumulative"):
        print(f"\n== top {args.top} by {order}")
        stats.sort_stats(order).print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
