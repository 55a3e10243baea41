"""From the raw tuple the middleware captured to a RequestLog row (in the writer thread)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import TooManyFieldsSent
from django.http import QueryDict

from fibonacci import addresses, params

from .models import QUERY_MAX_CHARS, USER_AGENT_MAX_CHARS, Endpoint

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
            addresses.stored(ip, anonymize=self.anonymize) or ip,
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
