"""`manage.py generate_request_logs N`: fill the request log with N plausible fake rows."""

from __future__ import annotations

import itertools
import random
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import DEFAULT_DB_ALIAS, connections

from requestlog.models import Endpoint, RequestLog
from requestlog.writer import insert_rows

_STATUSES = (200,) * 80 + (304,) * 6 + (400,) * 6 + (404,) * 2 + (429,) * 5 + (500,)
# Through the edge most answers come from nginx's cache; "" is the app's own record.
_CACHE_OUTCOMES = ("hit",) * 6 + ("miss",) * 3 + ("",)
_AGENTS = ("curl/8.5.0", "python-requests/2.32", "Mozilla/5.0 (X11; Linux x86_64)", "wrk")


def fake_rows(*, count: int, days: int, seed: int) -> Iterator[tuple[Any, ...]]:
    """`count` rows spread over the last `days` days, in the order of rows.COLUMNS."""
    rng = random.Random(seed)
    now = datetime.now(tz=UTC)
    span_seconds = days * 86_400
    clients = [f"203.0.{rng.randrange(256)}.{rng.randrange(256)}" for _ in range(2_000)]
    clients += [f"2001:db8:{rng.randrange(65536):x}::{rng.randrange(65536):x}" for _ in range(200)]
    for _ in range(count):
        status = rng.choice(_STATUSES)
        term = rng.random() < 0.3
        n = None if term else rng.choice((1, 10, 100, 1000, rng.randrange(10_001)))
        index = rng.randrange(100_001) if term else None
        query = "" if term else f"n={n}"
        yield (
            now - timedelta(seconds=rng.random() * span_seconds),
            "GET",
            Endpoint.TERM.value if term else Endpoint.SEQUENCE.value,
            n if status != 400 else None,
            None if term else 0,
            index if status != 400 else None,
            query,
            status,
            rng.choice(clients),
            rng.choice(_AGENTS),
            round(rng.lognormvariate(-0.5, 0.8), 3),
            rng.randrange(20, 200_000),
            status == 429,
            uuid.UUID(int=rng.getrandbits(128), version=4).hex,
            rng.choice(_CACHE_OUTCOMES),
        )


class Command(BaseCommand):
    """Inserts in batches through the request log's own writer (COPY on PostgreSQL)."""

    help = "Insert N fake request log rows spread over the last --days days (for load testing)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("count", type=int)
        parser.add_argument("--days", type=int, default=30)
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--batch-size", type=int, default=5_000)

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.perf_counter()
        rows = fake_rows(count=options["count"], days=options["days"], seed=options["seed"])
        while batch := list(itertools.islice(rows, options["batch_size"])):
            insert_rows(batch)
        connection = connections[DEFAULT_DB_ALIAS]
        if connection.vendor == "postgresql":
            # Fresh statistics: the admin's estimated count reads them.
            with connection.cursor() as cursor:
                cursor.execute(f"ANALYZE {connection.ops.quote_name(RequestLog._meta.db_table)}")
        elapsed = time.perf_counter() - started
        self.stdout.write(f"Inserted {options['count']} rows in {elapsed:.1f} s.")
