"""From a raw record to a RequestLog row: the middleware's tuples and the edge log's lines.

The middleware captures a RawRecord per request (parsed here, in the writer
thread); nginx's edge log has one JSON object per line (docs/request-log.md),
read by requestlog.shipper and turned here into the same RawRecord (and the
cache outcome), so that one mapping (endpoint, numbers, address) serves both.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import unquote_to_bytes

from django.conf import settings
from django.core.exceptions import TooManyFieldsSent
from django.http import QueryDict
from django.urls import Resolver404, resolve
from django.utils.encoding import repercent_broken_unicode

from fibonacci import addresses, params

from .models import (
    AGGREGATE_ID_MAX_CHARS,
    QUERY_MAX_CHARS,
    REQUEST_ID_MAX_CHARS,
    USER_AGENT_MAX_CHARS,
    AggregateReason,
    CacheOutcome,
    Endpoint,
)

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
    "cache",
)
Row = tuple[Any, ...]
# What is written for an edge aggregate line: RequestAggregate's fields in this order.
AGGREGATE_COLUMNS = ("aggregate_id", "minute", "client_ip", "reason", "status", "count")
EdgeLineKind = Literal["request", "aggregate"]

logger = logging.getLogger(__name__)

_ENDPOINTS = {
    "fibonacci-list": Endpoint.SEQUENCE,
    "fibonacci-detail": Endpoint.TERM,
    "api-root": Endpoint.ROOT,
    "schema": Endpoint.SCHEMA,
    "docs": Endpoint.DOCS,
}
RATE_LIMITED_STATUS = 429

# nginx's $upstream_cache_status: served from the cache, fetched from the app, or neither.
_CACHE_OUTCOMES = {
    "HIT": CacheOutcome.HIT,
    "STALE": CacheOutcome.HIT,
    "UPDATING": CacheOutcome.HIT,
    "REVALIDATED": CacheOutcome.HIT,
    "MISS": CacheOutcome.MISS,
    "EXPIRED": CacheOutcome.MISS,
    "BYPASS": CacheOutcome.BYPASS,
}


class EdgeLineError(ValueError):
    """A line of the edge log that is not one of the kinds docs/request-log.md describes."""


def cache_outcome(upstream_cache_status: str) -> str:
    """RequestLog.cache for nginx's $upstream_cache_status; empty when the cache did not answer."""
    return _CACHE_OUTCOMES.get(upstream_cache_status, CacheOutcome.NONE).value


@functools.lru_cache(maxsize=4096)
def resolved_path(raw_path: str) -> tuple[str | None, str | None]:
    """(url_name, index kwarg) of a raw request path, as the app would route it.

    Percent-decoded as gunicorn and Django decode PATH_INFO (bytes held as
    latin-1 characters; invalid UTF-8 re-percent-encoded), then resolved with
    the URLconf: (None, None) for a path the app answers 404.
    """
    if not raw_path.startswith("/"):
        return None, None
    path_info = repercent_broken_unicode(unquote_to_bytes(raw_path.encode("latin-1"))).decode()
    try:
        match = resolve(path_info)
    except Resolver404:
        return None, None
    return match.url_name, match.kwargs.get("index")


def _text(fields: Mapping[str, Any], key: str) -> str:
    value = fields.get(key, "")
    if not isinstance(value, str):
        raise EdgeLineError(f"{key!r} is not a string")
    return value


def _number(fields: Mapping[str, Any], key: str) -> float:
    value = fields.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EdgeLineError(f"{key!r} is not a number")
    return float(value)


def _count(fields: Mapping[str, Any], key: str) -> int:
    value = fields.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise EdgeLineError(f"{key!r} is not a whole number")
    return value


def _status(fields: Mapping[str, Any]) -> int:
    """The status of a line: nginx writes $status quoted, since a request that got
    none is "000" (not a JSON number); aggregate lines write it as a number."""
    value = fields.get("s")
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return _count(fields, "s")


def _identifier(fields: Mapping[str, Any], key: str, *, max_chars: int) -> str:
    value = _text(fields, key)
    if not value or len(value) > max_chars:
        raise EdgeLineError(f"{key!r} is not an id of 1 to {max_chars} characters")
    return value


def decode_edge_line(line: bytes) -> dict[str, Any]:
    """The JSON object of one edge log line; strings hold its raw bytes as latin-1 characters.

    nginx's escape=json escapes quotes, backslashes and control characters and
    passes every other byte as it came, valid UTF-8 or not; reading the bytes
    as latin-1 gives the strings WSGI gives the app (QUERY_STRING, HTTP_*).
    """
    try:
        fields = json.loads(line.decode("latin-1"))
    except ValueError as exc:
        raise EdgeLineError(f"not JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise EdgeLineError("not a JSON object")
    return fields


def edge_record(fields: Mapping[str, Any]) -> tuple[RawRecord, str]:
    """(raw record as the middleware captures one, cache outcome) of a request line ("k": "r")."""
    done = _number(fields, "t")  # when the response was done
    seconds = _number(fields, "rt")
    path, _, query = _text(fields, "u").partition("?")
    url_name, index = resolved_path(path) if path else (None, None)
    client = _text(fields, "c")
    return (
        done - seconds,
        seconds * 1000.0,
        _text(fields, "m"),
        url_name,
        index,
        query,
        _status(fields),
        client if addresses.canonical(client) else addresses.UNKNOWN,
        _text(fields, "a"),
        _count(fields, "b"),
        _identifier(fields, "id", max_chars=REQUEST_ID_MAX_CHARS),
    ), cache_outcome(_text(fields, "cs"))


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
        # The view's own reading of the request (fibonacci.params), so that a
        # row shows the numbers exactly when the answer used them.
        if endpoint == Endpoint.TERM:
            return None, None, params.index(index, maximum=self.max_index)
        if endpoint != Endpoint.SEQUENCE:
            return None, None, None
        try:
            # As the request parsed it: WSGI's str holds the raw bytes as latin-1.
            lookup = QueryDict(query.encode("iso-8859-1")).getlist
        except (TooManyFieldsSent, UnicodeEncodeError):  # the API refused it too
            return None, None, None
        return (
            params.n(lookup, maximum=self.max_n),
            params.offset(lookup, maximum=self.max_n),
            None,
        )

    def row(self, record: RawRecord, *, cache: str = CacheOutcome.NONE.value) -> Row:
        """The RequestLog row for one raw record (the middleware's, or an edge log line's)."""
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
            addresses.stored(ip, anonymize=self.anonymize) or ip,
            agent[:USER_AGENT_MAX_CHARS],
            round(duration_ms, 3),
            size,
            status == RATE_LIMITED_STATUS,
            rid,
            cache,
        )

    def aggregate_row(self, fields: Mapping[str, Any]) -> Row:
        """The RequestAggregate row (AGGREGATE_COLUMNS order) of an aggregate line ("k": "a")."""
        reason = _text(fields, "why")
        if reason not in AggregateReason.values:
            raise EdgeLineError(f"'why' is not one of {AggregateReason.values}")
        return (
            _identifier(fields, "id", max_chars=AGGREGATE_ID_MAX_CHARS),
            datetime.fromtimestamp(_count(fields, "minute"), tz=UTC),
            self._aggregate_client(_text(fields, "c")),
            reason,
            _status(fields),
            _count(fields, "n"),
        )

    def _aggregate_client(self, client: str) -> str:
        # The edge counts by budget key (addresses.budget_key: IPv6 as its /64
        # network): kept so, or anonymized as a row's address is.
        address, slash, _ = client.partition("/")
        stored = addresses.stored(address, anonymize=self.anonymize)
        if stored is None or (slash and addresses.budget_key(address) != client):
            return addresses.UNKNOWN
        return client if slash and not self.anonymize else stored

    def edge_line(self, line: bytes) -> tuple[EdgeLineKind, Row]:
        """What one edge log line records: a RequestLog row or a RequestAggregate row.

        Raises EdgeLineError for a line that is neither.
        """
        return self.edge_fields(decode_edge_line(line))

    def edge_fields(self, fields: Mapping[str, Any]) -> tuple[EdgeLineKind, Row]:
        """edge_line for a line already decoded (decode_edge_line)."""
        kind = fields.get("k")
        if kind == "r":
            record, cache = edge_record(fields)
            return "request", self.row(record, cache=cache)
        if kind == "a":
            return "aggregate", self.aggregate_row(fields)
        raise EdgeLineError(f"unknown kind {kind!r}")

    def rows(self, records: Iterable[RawRecord]) -> list[Row]:
        """Rows for every record; one that cannot be parsed is logged and skipped."""
        rows = []
        for record in records:
            try:
                rows.append(self.row(record))
            except Exception:  # noqa: BLE001 - one bad record must not stop the log
                logger.exception("request log: skipped a record that could not be parsed")
        return rows
