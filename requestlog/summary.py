"""The usage summary for a period: requests per day, top clients, status mix, percentiles,
cache hits and misses, and the requests the edge counted in aggregates."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from django.db import connections
from django.db.models import Count, QuerySet, Sum
from django.db.models.functions import TruncDate

from .models import AggregateReason, CacheOutcome, RequestAggregate, RequestLog
from .rows import RATE_LIMITED_STATUS

TOP_COUNT = 10
# Chart geometry in SVG user units; the browser scales the drawing to the page.
CHART_WIDTH = 720
CHART_HEIGHT = 200
CHART_MARGIN = 30


@dataclass(frozen=True, slots=True)
class ChartBar:
    """One day's bar in the requests-per-day chart."""

    day: date
    count: int
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True, slots=True)
class UsageSummary:
    """What operators want to know about one period."""

    since: datetime
    until: datetime
    total: int
    per_day: list[tuple[date, int]]
    top_clients: list[tuple[str, int]]
    status_mix: list[tuple[str, int]]
    rate_limited: int
    p50_ms: float | None
    p95_ms: float | None
    busiest_n: list[tuple[int, int]]
    # (label, requests) for hit, miss, bypass and none (the app's, or before the cache).
    cache_mix: list[tuple[str, int]]
    # (reason label, requests) the edge counted per client and minute, not one by one.
    aggregated: list[tuple[str, int]]

    @property
    def aggregated_total(self) -> int:
        """Requests counted in aggregates in this period."""
        return sum(count for _, count in self.aggregated)

    @property
    def cache_hit_percent(self) -> float | None:
        """Hits among the requests the cache looked up (hits and misses), in percent."""
        counts = dict(self.cache_mix)
        looked_up = counts[CacheOutcome.HIT.label] + counts[CacheOutcome.MISS.label]
        return 100.0 * counts[CacheOutcome.HIT.label] / looked_up if looked_up else None

    @property
    def rate_limited_percent(self) -> float:
        """Share of requests answered 429, in percent."""
        return 100.0 * self.rate_limited / self.total if self.total else 0.0

    @property
    def chart_bars(self) -> list[ChartBar]:
        """Bars of the requests-per-day chart, scaled to the tallest day."""
        if not self.per_day:
            return []
        tallest = max(count for _, count in self.per_day) or 1
        plot_height = CHART_HEIGHT - 2 * CHART_MARGIN
        slot = (CHART_WIDTH - 2 * CHART_MARGIN) / len(self.per_day)
        bars = []
        for position, (day, count) in enumerate(self.per_day):
            height = plot_height * count / tallest
            bars.append(
                ChartBar(
                    day=day,
                    count=count,
                    x=round(CHART_MARGIN + position * slot + slot * 0.1, 1),
                    y=round(CHART_MARGIN + plot_height - height, 1),
                    width=round(slot * 0.8, 1),
                    height=round(height, 1),
                )
            )
        return bars


def _percentiles(
    queryset: QuerySet[RequestLog], *, total: int
) -> tuple[float | None, float | None]:
    if not total:
        return None, None
    if connections[queryset.db].vendor == "postgresql":
        # One pass in the database instead of two sorts of the whole period.
        sql, params = queryset.values("duration_ms").query.sql_with_params()
        with connections[queryset.db].cursor() as cursor:
            cursor.execute(
                "SELECT percentile_disc(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY duration_ms)"
                f" FROM ({sql}) AS period",
                params,
            )
            p50, p95 = cursor.fetchone()[0]
        return float(p50), float(p95)
    ordered = queryset.order_by("duration_ms").values_list("duration_ms", flat=True)
    return ordered[int(0.5 * (total - 1))], ordered[int(0.95 * (total - 1))]


def _status_class(status: int) -> str:
    return f"{status // 100}xx"


def usage_summary(*, since: datetime, until: datetime) -> UsageSummary:
    """Summarize the requests that arrived in [since, until)."""
    period = RequestLog.objects.filter(time__gte=since, time__lt=until).order_by()
    # One scan gives the total, the status mix and the 429s (rate limited = 429).
    by_status = {
        row["status"]: row["count"] for row in period.values("status").annotate(count=Count("id"))
    }
    total = sum(by_status.values())
    by_class: dict[str, int] = {}
    for status, count in by_status.items():
        by_class[_status_class(status)] = by_class.get(_status_class(status), 0) + count
    per_day = [
        (row["day"], row["count"])
        for row in period.annotate(day=TruncDate("time"))
        .values("day")
        .annotate(count=Count("id"))
        .order_by("day")
    ]
    top_clients = [
        (row["client_ip"], row["count"])
        for row in period.values("client_ip")
        .annotate(count=Count("id"))
        .order_by("-count")[:TOP_COUNT]
    ]
    busiest_n: list[tuple[int, int]] = [
        (row["n"] or 0, row["count"])
        for row in period.filter(n__isnull=False)
        .values("n")
        .annotate(count=Count("id"))
        .order_by("-count", "n")[:TOP_COUNT]
    ]
    p50, p95 = _percentiles(period, total=total)
    by_cache = {
        row["cache"]: row["count"] for row in period.values("cache").annotate(count=Count("id"))
    }
    by_reason = {
        row["reason"]: row["requests"] or 0
        for row in RequestAggregate.objects.filter(minute__gte=since, minute__lt=until)
        .order_by()
        .values("reason")
        .annotate(requests=Sum("count"))
    }
    return UsageSummary(
        since=since,
        until=until,
        total=total,
        per_day=per_day,
        top_clients=top_clients,
        status_mix=sorted(by_class.items()),
        rate_limited=by_status.get(RATE_LIMITED_STATUS, 0),
        p50_ms=p50,
        p95_ms=p95,
        busiest_n=busiest_n,
        cache_mix=[(outcome.label, by_cache.get(outcome.value, 0)) for outcome in CacheOutcome],
        aggregated=[(reason.label, by_reason.get(reason.value, 0)) for reason in AggregateReason],
    )
