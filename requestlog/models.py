"""The request log's tables: a row per API request, aggregates of floods, shipped positions.

RequestLog rows come from the app (requestlog.buffer) and from nginx's edge log
(requestlog.shipper); RequestAggregate holds what the edge counted instead of
logging one by one; EdgeLogPosition is how far the shipper has read each log.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db import models
from django.db.models import Max, Min
from django.utils import timezone

# Longer raw values are cut to these lengths before they are stored.
QUERY_MAX_CHARS = 512
USER_AGENT_MAX_CHARS = 256
REQUEST_ID_MAX_CHARS = 64
AGGREGATE_ID_MAX_CHARS = 128
CLIENT_IP_MAX_CHARS = 45


class Endpoint(models.TextChoices):
    """Which part of the API a request addressed (fixed choices keep the admin filter free)."""

    SEQUENCE = "sequence", "sequence (/api/v1/fibonacci/)"
    TERM = "term", "term (/api/v1/fibonacci/{index}/)"
    ROOT = "root", "API root (/api/v1/)"
    SCHEMA = "schema", "OpenAPI schema"
    DOCS = "docs", "API docs"
    UNKNOWN = "unknown", "unknown path (404)"


class CacheOutcome(models.TextChoices):
    """Whether nginx's cache answered (requestlog.rows.cache_outcome maps nginx's status)."""

    HIT = "hit", "hit"
    MISS = "miss", "miss"
    BYPASS = "bypass", "bypass"
    NONE = "", "none (the app, or answered before the cache)"


class AggregateReason(models.TextChoices):
    """Why the edge counted requests instead of logging each one."""

    SHIELD = "shield", "shield (nginx's per-address limit)"
    OVER_RATE = "over_rate", "over the per-client log rate"


def _period_start(moment: datetime, kind: str) -> datetime:
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if kind == "day":
        return day
    if kind == "month":
        return day.replace(day=1)
    return day.replace(month=1, day=1)


def _next_period(start: datetime, kind: str) -> datetime:
    if kind == "day":
        return start + timedelta(days=1)
    if kind == "month":
        return (start + timedelta(days=32)).replace(day=1)
    return start.replace(year=start.year + 1)


class RequestLogQuerySet(models.QuerySet["RequestLog"]):
    """Request log queries, with a date drill-down that does not read the whole table."""

    def datetimes(  # type: ignore[override]
        self, field_name: str, kind: str, order: str = "ASC", tzinfo: Any = None
    ) -> list[datetime]:
        """Periods that hold rows, found by index probes.

        The admin's date hierarchy asks for these; Django's own answer is a
        SELECT DISTINCT over every matching row, about 0.5 s per million.
        """
        if field_name != "time" or kind not in {"year", "month", "day"} or tzinfo is not None:
            return list(super().datetimes(field_name, kind, order))  # type: ignore[arg-type]
        bounds = self.aggregate(first=Min("time"), last=Max("time"))
        if bounds["first"] is None:
            return []
        zone = timezone.get_current_timezone()
        start = _period_start(bounds["first"].astimezone(zone), kind)
        last = bounds["last"].astimezone(zone)
        periods = []
        while start <= last:
            following = _next_period(start, kind)
            if self.filter(time__gte=start, time__lt=following).exists():
                periods.append(start)
            start = following
        return periods if order == "ASC" else periods[::-1]


class RequestLog(models.Model):
    """One answered API request: who asked what, and how the service answered."""

    time = models.DateTimeField(help_text="When the request arrived.")
    method = models.CharField(max_length=8)
    endpoint = models.CharField(max_length=16, choices=Endpoint)
    n = models.PositiveIntegerField(null=True, blank=True, help_text="Null when invalid.")
    offset = models.PositiveIntegerField(null=True, blank=True, help_text="Null when invalid.")
    index = models.PositiveIntegerField(null=True, blank=True, help_text="Null when invalid.")
    query = models.CharField(max_length=QUERY_MAX_CHARS, blank=True)
    status = models.PositiveSmallIntegerField()
    client_ip = models.CharField(
        max_length=CLIENT_IP_MAX_CHARS, help_text="Truncated when anonymized."
    )
    user_agent = models.CharField(max_length=USER_AGENT_MAX_CHARS, blank=True)
    duration_ms = models.FloatField()
    response_bytes = models.PositiveBigIntegerField()
    rate_limited = models.BooleanField(default=False)
    request_id = models.CharField(max_length=REQUEST_ID_MAX_CHARS)
    # The database keeps the default, so a writer that does not name the column
    # (an older release during a rolling deploy) still inserts.
    cache = models.CharField(
        max_length=8,
        choices=CacheOutcome,
        blank=True,
        default="",
        db_default="",
        help_text="Whether nginx's cache answered; empty for the app's own records.",
    )

    objects = RequestLogQuerySet.as_manager()

    class Meta:
        # The table the `fibonacci` app created, before the log became an app of its own.
        db_table = "fibonacci_requestlog"
        ordering = ("-time", "-id")
        # One index per admin filter or search, each ending in time so that the
        # newest page of a filtered changelist is read from the index in order.
        indexes = [
            models.Index(fields=["time", "id"], name="requestlog_time"),
            models.Index(fields=["endpoint", "time"], name="requestlog_endpoint_time"),
            models.Index(fields=["status", "time"], name="requestlog_status_time"),
            models.Index(fields=["client_ip", "time"], name="requestlog_client_time"),
            models.Index(fields=["cache", "time"], name="requestlog_cache_time"),
            models.Index(
                fields=["time"],
                name="requestlog_limited_time",
                condition=models.Q(rate_limited=True),
            ),
        ]
        # One row per request: a batch or spool file written twice adds nothing
        # (requestlog.writer inserts with ON CONFLICT DO NOTHING). Also the
        # index of the admin's search by request id.
        constraints = [
            models.UniqueConstraint(fields=["request_id"], name="requestlog_request_id_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.method} {self.endpoint} {self.status} at {self.time:%Y-%m-%d %H:%M:%S}"


class RequestAggregate(models.Model):
    """Requests the edge counted instead of logging each: one client, minute, reason and status."""

    minute = models.DateTimeField(help_text="The start of the minute counted.")
    client_ip = models.CharField(
        max_length=CLIENT_IP_MAX_CHARS, help_text="Truncated when anonymized."
    )
    reason = models.CharField(max_length=16, choices=AggregateReason)
    status = models.PositiveSmallIntegerField()
    count = models.PositiveIntegerField()
    aggregate_id = models.CharField(
        max_length=AGGREGATE_ID_MAX_CHARS, help_text="The edge's id of this count."
    )

    class Meta:
        ordering = ("-minute", "-id")
        # As RequestLog's: one index per admin filter or search, each ending in minute.
        indexes = [
            models.Index(fields=["minute", "id"], name="requestaggregate_minute"),
            models.Index(fields=["reason", "minute"], name="requestaggregate_reason"),
            models.Index(fields=["client_ip", "minute"], name="requestaggregate_client"),
        ]
        # A line shipped twice adds nothing (ON CONFLICT (aggregate_id) DO NOTHING).
        constraints = [
            models.UniqueConstraint(fields=["aggregate_id"], name="requestaggregate_id_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.count} x {self.status} {self.reason} from {self.client_ip} at {self.minute}"


class EdgeLogPosition(models.Model):
    """How far `manage.py ship_edge_log` has shipped one edge log, and how far behind it is."""

    path = models.CharField(max_length=512, unique=True, help_text="The log's absolute path.")
    inode = models.PositiveBigIntegerField(help_text="The inode of the file being read.")
    offset = models.PositiveBigIntegerField(help_text="Bytes shipped: the end of the last line.")
    lag_bytes = models.PositiveBigIntegerField(
        default=0, help_text="Bytes written but not shipped yet, when last updated."
    )
    skipped_lines = models.PositiveBigIntegerField(
        default=0, help_text="Lines skipped (malformed, or refused by the database), in all."
    )
    last_shipped = models.DateTimeField(null=True, blank=True, help_text="Last lines committed.")
    updated = models.DateTimeField(help_text="The shipper last wrote this row (about every 30 s).")

    def __str__(self) -> str:
        return f"{self.path} at {self.offset} of inode {self.inode}"
