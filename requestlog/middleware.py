"""RequestLogMiddleware: time each API request and queue a record of it."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import MiddlewareNotUsed
from django.http import HttpRequest, HttpResponse, HttpResponseBase

from fibonacci.api.scope import is_api_request
from fibonacci.edge import forwarded_by_edge
from fibonacci.ratelimit.identity import client_ip, is_from_trusted_proxy
from fibproject.logging_config import REQUEST_ID

from .buffer import current_buffer
from .models import REQUEST_ID_MAX_CHARS

# Recorded: every API request (fibonacci.api.scope); not probes, static files or the admin.
# A proxy's request id is passed on only if it is short and plain.
_REQUEST_ID = re.compile(rf"[A-Za-z0-9._:-]{{1,{REQUEST_ID_MAX_CHARS}}}")


def request_id(request: HttpRequest) -> str:
    """Our proxy's X-Request-ID when it sent a sane one, else 32 random hex digits.

    The same form as nginx's $request_id; cheaper than formatting a uuid4."""
    given: str = request.META.get("HTTP_X_REQUEST_ID", "")
    if given and _REQUEST_ID.fullmatch(given) and is_from_trusted_proxy(request):
        return given
    return secrets.token_hex(16)


def body_bytes(request: HttpRequest, response: HttpResponseBase) -> int:
    """The size of the body sent: Content-Length when set (reading .content would
    join a large answer's pieces), 0 for HEAD and for streamed answers."""
    if request.method == "HEAD" or not isinstance(response, HttpResponse):
        return 0
    length = response.get("Content-Length")
    return int(length) if length is not None else len(response.content)


class RequestLogMiddleware:
    """Adds X-Request-ID to every API response and queues one record per request.

    The request pays for two clock reads, a request id and one deque append;
    parsing and the database insert happen in the writer thread.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        if not settings.FIB_REQUEST_LOG:
            raise MiddlewareNotUsed("FIB_REQUEST_LOG is off")
        self.get_response = get_response
        self._append = current_buffer().append

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if not is_api_request(request):
            return self.get_response(request)
        arrived = time.time()
        started = time.perf_counter()
        rid = request_id(request)
        # Every log line written while it is served names it (fibproject/logging_config.py).
        token = REQUEST_ID.set(rid)
        try:
            response = self.get_response(request)
        finally:
            REQUEST_ID.reset(token)
        duration_ms = (time.perf_counter() - started) * 1000.0
        response["X-Request-ID"] = rid
        if forwarded_by_edge(request):
            # The edge writes this request's record (its log, shipped by ship_edge_log).
            return response
        match = request.resolver_match
        self._append(
            (
                arrived,
                duration_ms,
                request.method or "",
                match.url_name if match else None,
                match.kwargs.get("index") if match else None,
                request.META.get("QUERY_STRING", ""),
                response.status_code,
                client_ip(request),
                request.META.get("HTTP_USER_AGENT", ""),
                body_bytes(request, response),
                rid,
            )
        )
        return response
