"""Load generation with wrk: one run, its parsed figures, and alternating rounds.

Absolute numbers drift on a shared machine, so targets that are compared run
in alternating short rounds (A, B, A, B, ...) and each keeps its best round:
noise from other processes only ever lowers throughput, so the best round is
the closest to what the server can do.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_PERCENTILE = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)
_REQUESTS_PER_S = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_TOTAL = re.compile(r"^\s*(\d+) requests in", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


class WrkMissingError(RuntimeError):
    """wrk is not installed."""


@dataclass(frozen=True)
class LoadSettings:
    """How hard and how long each measured round pushes."""

    duration_s: float
    connections: int
    threads: int
    rounds: int


@dataclass(frozen=True)
class WrkResult:
    """The figures of one wrk run."""

    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int


def require_wrk() -> str:
    """The wrk executable, or WrkMissingError telling how to install it."""
    path = shutil.which("wrk")
    if path is None:
        raise WrkMissingError("wrk is not installed: run `apt-get install wrk` and try again.")
    return path


def parse_wrk(output: str) -> WrkResult:
    """Figures from wrk's text output (run with --latency)."""
    percentiles = {
        name: float(value) * _UNITS_MS[unit] for name, value, unit in _PERCENTILE.findall(output)
    }
    rate = _REQUESTS_PER_S.search(output)
    total = _TOTAL.search(output)
    if rate is None or total is None or "50" not in percentiles or "99" not in percentiles:
        raise RuntimeError("could not parse wrk output:\n" + output)
    non_2xx = _NON_2XX.search(output)
    errors = _SOCKET_ERRORS.search(output)
    return WrkResult(
        requests_per_s=float(rate.group(1)),
        p50_ms=percentiles["50"],
        p99_ms=percentiles["99"],
        requests=int(total.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(count) for count in errors.groups()) if errors else 0,
    )


def run_wrk(
    *,
    url: str,
    duration_s: float,
    connections: int,
    threads: int,
    headers: Sequence[str] = (),
    script: Path | None = None,
) -> WrkResult:
    """One wrk run against `url`, sending `headers` ("Name: value") with every request.

    A `script` (wrk's Lua) may choose each request's path itself.
    """
    command = [
        require_wrk(),
        f"--threads={min(threads, connections)}",
        f"--connections={connections}",
        f"--duration={max(1, round(duration_s))}s",
        "--timeout=30s",
        "--latency",
        *(f"--header={header}" for header in headers),
        *([f"--script={script}"] if script is not None else []),
        url,
    ]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr.strip()}")
    return parse_wrk(completed.stdout)


def best_of(results: Sequence[WrkResult]) -> WrkResult:
    """The round with the highest throughput."""
    return max(results, key=lambda result: result.requests_per_s)


def alternate(
    *,
    urls: dict[str, str],
    load: LoadSettings,
    headers: Sequence[str] = (),
    script: Path | None = None,
) -> dict[str, WrkResult]:
    """Run each named URL in turn for `load.rounds` rounds; the best round of each."""
    rounds: dict[str, list[WrkResult]] = {name: [] for name in urls}
    for _ in range(load.rounds):
        for name, url in urls.items():
            rounds[name].append(
                run_wrk(
                    url=url,
                    duration_s=load.duration_s,
                    connections=load.connections,
                    threads=load.threads,
                    headers=headers,
                    script=script,
                )
            )
    return {name: best_of(results) for name, results in rounds.items()}


def warm_up(*, urls: Sequence[str], load: LoadSettings) -> None:
    """A short unmeasured run per URL, so every worker has done its lazy imports."""
    for url in urls:
        run_wrk(url=url, duration_s=1, connections=load.connections, threads=load.threads)
