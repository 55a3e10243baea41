"""`manage.py prune_request_logs`: delete request logs (and the edge's aggregates) older than
FIB_LOG_RETENTION_DAYS."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db.models import Model
from django.utils import timezone

from requestlog.models import RequestAggregate, RequestLog


class Command(BaseCommand):
    """Deletes in small batches, each its own short transaction, so it can run under load."""

    help = "Delete request log records older than FIB_LOG_RETENTION_DAYS (default 30), in batches."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--days", type=int, default=None, help="Keep this many days (default: the setting)."
        )
        parser.add_argument("--batch-size", type=int, default=5_000)
        parser.add_argument(
            "--pause-ms",
            type=int,
            default=50,
            help="Sleep between batches, leaving the database to the API (default 50).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["days"] if options["days"] is not None else settings.FIB_LOG_RETENTION_DAYS
        if days < 1 or options["batch_size"] < 1:
            self.stderr.write("--days and --batch-size must be at least 1.")
            raise SystemExit(2)
        cutoff = timezone.now() - timedelta(days=days)
        batches = {"batch_size": options["batch_size"], "pause_seconds": options["pause_ms"] / 1000}
        deleted = prune_request_logs(cutoff=cutoff, **batches)
        aggregates = prune_request_logs(
            cutoff=cutoff, model=RequestAggregate, time_field="minute", **batches
        )
        self.stdout.write(
            f"Deleted {deleted} request log records and {aggregates} aggregates"
            f" older than {cutoff:%Y-%m-%d %H:%M} UTC."
        )


def prune_request_logs(
    *,
    cutoff: Any,
    batch_size: int,
    pause_seconds: float,
    model: type[Model] = RequestLog,
    time_field: str = "time",
) -> int:
    """Delete records older than `cutoff`, oldest first, `batch_size` per statement."""
    deleted = 0
    old = model._default_manager.filter(**{f"{time_field}__lt": cutoff})
    while True:
        # Ids first: a DELETE ... LIMIT is not portable, and a bounded id list
        # keeps each statement's locks and WAL small.
        ids = list(old.order_by(time_field).values_list("pk", flat=True)[:batch_size])
        if not ids:
            return deleted
        count, _ = model._default_manager.filter(pk__in=ids).delete()
        deleted += count
        if len(ids) < batch_size:
            return deleted
        time.sleep(pause_seconds)
