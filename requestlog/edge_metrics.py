"""The edge's metrics, counted from the edge log by its shipper (`ship_edge_log --metrics-port`).

nginx pays nothing for them: every API request is a line of the edge log, or
part of an aggregate line's count, and the shipper reads every line anyway.
A batch's lines are counted once its transaction has committed, so a restart
(which reads again from the committed position) counts nothing twice.

Served from the shipper's own registry (not the app's multiprocess one) on a
loopback address by default. Label values are bounded: a status is nginx's
three-digit code (anything else "other"), the cache one of requestlog's four
outcomes, the limiter's decision one of DECISIONS' values, "shield",
"over_rate" or "other"; no address, path or query. docs/operations.md lists
the metrics.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from .models import AggregateReason, CacheOutcome
from .rows import AGGREGATE_COLUMNS, COLUMNS, EdgeLineKind, Row

# The edge log's "l" (deploy/edge/fib_edge.lua) -> the decision label.
DECISIONS = {
    "": "allowed",  # counted and allowed, or never reached the limiter (nginx refused the read)
    "default": "refused_default",
    "large": "refused_large",
    "fail_open": "fail_open",
    "fail_closed": "fail_closed",
}
# Aggregate lines: the shield refused them; over_rate ones were not logged one by one,
# so their limiter decision is not known (their status is).
AGGREGATE_DECISIONS = {reason.value: reason.value for reason in AggregateReason}
OTHER = "other"
COUNTERS_DOWN = ("fail_open", "fail_closed")
CACHE_VALUES = frozenset(outcome.value for outcome in CacheOutcome)

_STATUS = COLUMNS.index("status")
_CACHE = COLUMNS.index("cache")
_AGGREGATE_STATUS = AGGREGATE_COLUMNS.index("status")
_AGGREGATE_REASON = AGGREGATE_COLUMNS.index("reason")
_AGGREGATE_COUNT = AGGREGATE_COLUMNS.index("count")


def status_label(status: Any) -> str:
    """An HTTP status as its three digits; anything else is "other"."""
    if isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 999:
        return str(status)
    return OTHER


def cache_label(cache: Any) -> str:
    """One of the request log's cache outcomes (hit, miss, bypass, ""), else "other"."""
    return cache if cache in CACHE_VALUES else OTHER


def decision_label(limit: Any) -> str:
    """The limiter's decision label for a request line's "l"."""
    return DECISIONS.get(limit, OTHER) if isinstance(limit, str) else OTHER


@dataclass
class Tally:
    """What one batch of lines adds, applied once the batch is committed."""

    requests: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    decisions: collections.Counter[str] = field(default_factory=collections.Counter)

    def add(self, kind: EdgeLineKind, row: Row, fields: Mapping[str, Any]) -> None:
        """Count one parsed line: a request (one) or an aggregate (its count)."""
        if kind == "request":
            self.requests[status_label(row[_STATUS]), cache_label(row[_CACHE])] += 1
            self.decisions[decision_label(fields.get("l", ""))] += 1
        else:
            count = row[_AGGREGATE_COUNT]
            self.requests[status_label(row[_AGGREGATE_STATUS]), ""] += count
            self.decisions[AGGREGATE_DECISIONS.get(row[_AGGREGATE_REASON], OTHER)] += count


class EdgeMetrics:
    """The shipper's registry: the edge's requests, limiter decisions and the shipping itself."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "fib_edge_requests",
            "API requests the edge answered (from its log), by status and cache outcome "
            '(hit, miss, bypass; "" when the cache did not answer, and for aggregated requests).',
            ["status", "cache"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "fib_edge_limiter_decisions",
            "API requests by the edge limiter's decision: allowed, refused_default, "
            "refused_large, fail_open, fail_closed, shield (refused by nginx's per-address "
            "limits), over_rate (past the per-client log rate: not recorded).",
            ["decision"],
            registry=self.registry,
        )
        self.counters_unavailable = Counter(
            "fib_edge_counters_unavailable",
            "API requests the edge answered with its counters unavailable "
            "(decisions fail_open and fail_closed).",
            registry=self.registry,
        )
        self.shipped = Counter(
            "fib_edge_log_shipped",
            "Edge log lines committed to the request log.",
            registry=self.registry,
        )
        self.skipped = Counter(
            "fib_edge_log_skipped",
            "Edge log lines skipped: malformed, refused by the database, or left unfinished.",
            registry=self.registry,
        )
        self.last_shipped = Gauge(
            "fib_edge_log_last_shipped_timestamp_seconds",
            "When the shipper last committed lines (Unix time; 0: not since it started).",
            registry=self.registry,
        )
        self.lag = Gauge(
            "fib_edge_log_lag_bytes",
            "Bytes of the edge log written but not shipped yet.",
            registry=self.registry,
        )
        # Every decision exists from the start, so that rate() and alerts see 0, not nothing.
        for decision in [*DECISIONS.values(), *AGGREGATE_DECISIONS.values(), OTHER]:
            self.decisions.labels(decision=decision)

    def committed(self, tally: Tally, *, shipped: int, skipped: int, at: datetime) -> None:
        """A batch was committed at `at`: add what its lines counted."""
        for (status, cache), count in tally.requests.items():
            self.requests.labels(status=status, cache=cache).inc(count)
        for decision, count in tally.decisions.items():
            self.decisions.labels(decision=decision).inc(count)
            if decision in COUNTERS_DOWN:
                self.counters_unavailable.inc(count)
        self.shipped.inc(shipped)
        self.skipped.inc(skipped)
        self.last_shipped.set(at.timestamp())

    def watch_lag(self, lag_bytes: Callable[[], float]) -> None:
        """Read the lag from lag_bytes at every scrape."""
        self.lag.set_function(lag_bytes)

    def serve(self, port: int, address: str = "127.0.0.1") -> Callable[[], None]:
        """Serve /metrics on address:port in a thread; returns what stops it."""
        server, thread = start_http_server(port, addr=address, registry=self.registry)

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

        return stop
