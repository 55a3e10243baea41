"""From the raw tuple the middleware captured to a RequestLog row (in the writer thread)."""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, transaction

from ..models import QUERY_MAX_CHARS, USER_AGENT_MAX_CHARS, Endpoint, RequestLog
from ..services import parse_decimal

# What the middleware appends, in this order (a plain tuple: the cheapest to build):
# arrived (epoch seconds), duration_ms, method, url_name, index from the URL,
# raw query string, status, client IP, user agent, response bytes, request id.
RawRecord = tuple[float, float, str, str | None, str | None, str, int, str, str, int, str]
# What is written: RequestLog's fields in this order.
COLUMNS = (
    "time",
    "method",
    "endpoint",
    "n",
    "offset",
    "index",
    "query",
    "status",
    "client_ip",
    "user_agent",
    "duration_ms",
    "response_bytes",
    "rate_limited",
    "request_id",
)
Row = tuple[Any, ...]

logger = logging.getLogger(__name__)

_ENDPOINTS = {
    "fibonacci-list": Endpoint.SEQUENCE,
    "fibonacci-detail": Endpoint.TERM,
    "api-root": Endpoint.ROOT,
    "schema": Endpoint.SCHEMA,
    "docs": Endpoint.DOCS,
}
RATE_LIMITED_STATUS = 429
# A query with more parameters than this is not worth parsing.
_MAX_QUERY_FIELDS = 50


@functools.lru_cache(maxsize=4096)
def anonymize_ip(ip: str) -> str:
    """IPv4 cut to its /24 and IPv6 to its /48 (network address); anything else unchanged."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network((address, prefix), strict=False).network_address)


def _parsed(values: list[str] | None, *, maximum: int) -> int | None:
    # The rules of serializers.DecimalIntegerField (given once, ASCII digits, at
    # most `maximum`) without a DRF field per value: this runs for every record.
    if values is None or len(values) != 1:
        return None
    return parse_decimal(values[0], maximum=maximum)


class RecordParser:
    """Turns raw records into RequestLog rows (tuples in COLUMNS order); one per batch."""

    def __init__(self, *, anonymize: bool, max_n: int, max_index: int) -> None:
        self.anonymize = anonymize
        self.max_n = max_n
        self.max_index = max_index

    @classmethod
    def from_settings(cls) -> RecordParser:
        """A parser configured by FIB_LOG_IP_ANONYMIZE, FIB_MAX_N and FIB_MAX_INDEX."""
        return cls(
            anonymize=settings.FIB_LOG_IP_ANONYMIZE,
            max_n=settings.FIB_MAX_N,
            max_index=settings.FIB_MAX_INDEX,
        )

    def _numbers(
        self, endpoint: str, query: str, index: str | None
    ) -> tuple[int | None, int | None, int | None]:
        if endpoint == Endpoint.TERM:
            return (
                None,
                None,
                _parsed([index] if index is not None else None, maximum=self.max_index),
            )
        if endpoint != Endpoint.SEQUENCE:
            return None, None, None
        try:
            params = parse_qs(query, keep_blank_values=True, max_num_fields=_MAX_QUERY_FIELDS)
        except ValueError:
            return None, None, None
        offset = params.get("offset", ["0"])  # absent means the default, F(0) first
        return (
            _parsed(params.get("n"), maximum=self.max_n),
            _parsed(offset, maximum=self.max_n),
            None,
        )

    def row(self, record: RawRecord) -> Row:
        """The RequestLog row for one raw record."""
        (arrived, duration_ms, method, url_name, index, query, status, ip, agent, size, rid) = (
            record
        )
        endpoint = _ENDPOINTS.get(url_name or "", Endpoint.UNKNOWN)
        n, offset, parsed_index = self._numbers(endpoint, query, index)
        return (
            datetime.fromtimestamp(arrived, tz=UTC),
            method[:8],
            endpoint.value,
            n,
            offset,
            parsed_index,
            query[:QUERY_MAX_CHARS],
            status,
            anonymize_ip(ip) if self.anonymize else ip,
            agent[:USER_AGENT_MAX_CHARS],
            round(duration_ms, 3),
            size,
            status == RATE_LIMITED_STATUS,
            rid,
        )

    def rows(self, records: Iterable[RawRecord]) -> list[Row]:
        """Rows for every record; one that cannot be parsed is logged and skipped."""
        rows = []
        for record in records:
            try:
                rows.append(self.row(record))
            except Exception:  # noqa: BLE001 - one bad record must not stop the log
                logger.exception("request log: skipped a record that could not be parsed")
        return rows


def insert_rows(rows: Sequence[Row], *, using: str = DEFAULT_DB_ALIAS) -> None:
    """Insert rows in one transaction: COPY on PostgreSQL, executemany elsewhere.

    Neither builds model instances or compiles an INSERT per row: that costs
    about ten times more and competes with the API for the interpreter.
    """
    if not rows:
        return
    connection = connections[using]
    quote = connection.ops.quote_name
    table = quote(RequestLog._meta.db_table)
    columns = ", ".join(quote(name) for name in COLUMNS)  # no field renames its column
    with transaction.atomic(using=using), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            return
        adapt_time = connection.ops.adapt_datetimefield_value
        prepared = [(adapt_time(row[0]), *row[1:]) for row in rows]
        placeholders = ", ".join(["%s"] * len(COLUMNS))
        cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({placeholders})", prepared)
