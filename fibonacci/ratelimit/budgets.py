"""What a request spends: django-ratelimit counters per client, and the "large" rule.

Every API request spends one unit of the client's `default` budget
(FIB_RATE_LIMIT); a large request (see is_large) also spends one of the
stricter `large` budget (FIB_RATE_LIMIT_LARGE), because response size grows
with the square of n.
Counters live in the `ratelimit` cache: Redis (shared by every worker and
machine, see fibonacci.ratelimit.redis_counters) when REDIS_URL is set, else a local-memory
cache that only counts within one process.

When the counters cannot be reached the API keeps answering (fail open) and
the failure is logged once per interval; FIB_RATE_LIMIT_FAIL_CLOSED=true
answers 503 instead.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, TooManyFieldsSent
from django.http import HttpRequest
from django_ratelimit.core import get_usage
from rest_framework import exceptions
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.views import APIView

from fibonacci import addresses, params
from fibonacci.edge import forwarded_by_edge
from fibonacci.sequence import sequence_table
from fibproject import metrics

from .identity import client_ip
from .rates import parse_rate

logger = logging.getLogger(__name__)

# After a counter failure, skip the counters for this long: a dead Redis must
# not cost every request a connection timeout, nor the log a line per request.
OUTAGE_RETRY_SECONDS = 5.0

# Caches that count within one process only.
LOCAL_CACHE_BACKENDS = frozenset(
    {
        "django.core.cache.backends.locmem.LocMemCache",
        "django.core.cache.backends.dummy.DummyCache",
    }
)


class RateLimiterUnavailable(APIException):
    """503: the counters are unreachable and the service is set to fail closed."""

    retry_after_seconds = int(OUTAGE_RETRY_SECONDS)
    status_code = 503
    default_detail = "Rate limiting is unavailable; try again shortly."
    default_code = "rate_limiter_unavailable"


@dataclass(frozen=True, slots=True)
class Usage:
    """One budget's state after this request: `name`, quota, remaining, seconds to reset."""

    name: str
    quota: int
    window_seconds: int
    remaining: int
    reset_seconds: int
    exceeded: bool


class _Outage:
    """Per-process memory of a counter failure, so it is logged once per interval."""

    until = 0.0

    @classmethod
    def active(cls) -> bool:
        return time.monotonic() < cls.until

    @classmethod
    def record(cls, exc: Exception) -> None:
        cls.until = time.monotonic() + OUTAGE_RETRY_SECONDS
        metrics.LIMITER_OUTAGES.labels(mode=_mode()).inc()
        logger.error(
            "rate-limit counters unavailable (%s: %s); %s for %.0f s",
            type(exc).__name__,
            exc,
            "refusing requests" if settings.FIB_RATE_LIMIT_FAIL_CLOSED else "not limiting",
            OUTAGE_RETRY_SECONDS,
        )


def _mode() -> str:
    """What the limiter does while the counters are down: `open` or `closed` (a metric label)."""
    return "closed" if settings.FIB_RATE_LIMIT_FAIL_CLOSED else "open"


def limiter_state(*, counters_reachable: bool = True) -> str:
    """`ok`, `off`, or a description of the outage, for /readyz.

    An outage is this process's memory of a failed count, or `counters_reachable`
    false: the probe found the counters down (the worker answering the probe
    may not have counted anything lately).
    """
    if not settings.FIB_RATE_LIMIT_ENABLED:
        return "off"
    if not counters_reachable or _Outage.active():
        mode = "failing closed" if settings.FIB_RATE_LIMIT_FAIL_CLOSED else "failing open"
        return f"counters unavailable, {mode}"
    return "ok"


def is_large(request: Request, view: APIView) -> bool:
    """Whether the answer will be large: a window bigger than the first FIB_LARGE_N terms'.

    Judged by the bytes of the prepared window, since size grows with the
    offset as well as with n (large_counts). Invalid input is not large:
    validation rejects it.
    """
    index = view.kwargs.get("index")
    if index is not None:
        value = params.index(index, maximum=settings.FIB_MAX_INDEX)
        return value is not None and value > settings.FIB_LARGE_INDEX
    maximum = settings.FIB_MAX_N
    window = params.window(request.query_params.getlist, maximum=maximum)
    if not window:
        return False
    return window.count > large_counts(maximum, settings.FIB_LARGE_N)[window.offset]


def _is_large_or_malformed(request: Request, view: APIView) -> bool:
    try:
        return is_large(request, view)
    except TooManyFieldsSent:
        # Too many query parameters to parse: the view answers 400; not large.
        return False


@functools.lru_cache(maxsize=8)
def large_counts(table_size: int, large_n: int) -> tuple[int, ...]:
    """For each offset 0 .. table_size, the largest `n` whose window there is not large.

    A window is large when its bytes pass those of the first `large_n` terms.
    Sizes grow with n and with the offset, so one pass finds every bound. The
    edge's limiter looks its answers up in this same table (fibonacci.edge).
    """
    numbers = sequence_table(table_size).numbers
    threshold = numbers.window_bytes(offset=0, count=min(large_n, table_size))
    counts = []
    count = table_size
    for offset in range(table_size + 1):
        count = min(count, table_size - offset)
        while count and numbers.window_bytes(offset=offset, count=count) > threshold:
            count -= 1
        counts.append(count)
    return tuple(counts)


def budget_usage(
    request: HttpRequest | Request,
    *,
    name: str,
    group: str,
    rate: str,
    key: str,
    increment: bool = True,
) -> Usage:
    """One budget of `key` in django-ratelimit's `group`: counted once more unless `increment`
    is false (then only read). Every limit of the service counts through here."""
    parsed = parse_rate(rate)
    quota, window_seconds = parsed.count, parsed.window_seconds
    usage: dict[str, Any] = get_usage(
        request,
        group=group,
        key=lambda group, req: key,
        # The parsed tuple: django-ratelimit would otherwise parse the string per call.
        rate=(quota, window_seconds),
        increment=increment,
    )
    return Usage(
        name=name,
        quota=usage["limit"],
        window_seconds=window_seconds,
        remaining=max(0, usage["limit"] - usage["count"]),
        # The window still holds during its last second: it resets one second later.
        reset_seconds=max(1, usage["time_left"] + 1),
        exceeded=usage["should_limit"],
    )


@dataclass(frozen=True, slots=True)
class Budget:
    """One of the API's per-client budgets: its name (in RateLimit fields) and rate."""

    name: str
    rate: str

    @property
    def group(self) -> str:
        """django-ratelimit's group, part of every counter's name."""
        return f"fibonacci.{self.name}"


def api_budgets() -> tuple[Budget, Budget]:
    """The API's budgets: every request spends `default`, a large one `large` as well."""
    return Budget("default", settings.FIB_RATE_LIMIT), Budget(
        "large", settings.FIB_RATE_LIMIT_LARGE
    )


def _spend(request: Request, budget: Budget, *, key: str) -> Usage:
    return budget_usage(request, name=budget.name, group=budget.group, rate=budget.rate, key=key)


def spend_budgets(request: Request, view: APIView) -> list[Usage]:
    """Spend the client's budgets for this request; raise Throttled when one is exhausted.

    Returns what was spent (nothing when limiting is off or the counters are
    down and failing open); raises RateLimiterUnavailable when failing closed.
    """
    if not settings.FIB_RATE_LIMIT_ENABLED or forwarded_by_edge(request):
        # Off, or counted by our edge already (fibonacci.edge).
        return []
    if not _Outage.active():
        key = addresses.budget_key(client_ip(request))
        # Judged before the counters are touched: only a failure of the cache
        # below is an outage, never the request's own malformed query.
        large = _is_large_or_malformed(request, view)
        default, large_budget = api_budgets()
        try:
            usages = [_spend(request, default, key=key)]
            if large:
                usages.append(_spend(request, large_budget, key=key))
        except Exception as exc:  # noqa: BLE001 - any cache failure is an outage
            _Outage.record(exc)
        else:
            exceeded = [usage.reset_seconds for usage in usages if usage.exceeded]
            if exceeded:
                raise Throttled(wait=max(exceeded), usages=usages)
            return usages
    if settings.FIB_RATE_LIMIT_FAIL_CLOSED:
        metrics.LIMITER_UNCHECKED.labels(decision="refused").inc()
        raise RateLimiterUnavailable()
    metrics.LIMITER_UNCHECKED.labels(decision="allowed").inc()
    return []


class Throttled(exceptions.Throttled):
    """429, carrying the budgets so the refusal has RateLimit fields like any answer."""

    def __init__(self, *, wait: int, usages: list[Usage]) -> None:
        super().__init__(wait=wait)
        self.usages = usages


def check_shared_counters(*, workers: int) -> None:
    """Refuse to serve several workers whose limits would be counted per process."""
    if not settings.FIB_RATE_LIMIT_ENABLED or workers <= 1:
        return
    backend = settings.CACHES[settings.RATELIMIT_USE_CACHE]["BACKEND"]
    if backend in LOCAL_CACHE_BACKENDS:
        raise ImproperlyConfigured(
            f"{workers} workers with a local-memory cache would each count rate limits "
            "separately: set REDIS_URL to a shared Redis (or FIB_RATE_LIMIT_ENABLED=false)."
        )
