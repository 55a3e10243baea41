"""One place that turns every API error into RFC 9457 problem details.

Validation errors, 404, 405, 406, 429, 503 and unexpected 500s all leave
through `problem_response`, as `application/problem+json`. An unexpected
exception is not answered here: it goes through Django's own 500 handling, so
its signal and logger see it, and handler500 gives the client the problem.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse
from django.views import defaults
from rest_framework import exceptions

from .scope import is_api_request

PROBLEM_CONTENT_TYPE = "application/problem+json"

FieldErrors = Mapping[str, Sequence[str]]


def problem_response(
    *,
    status: int,
    detail: str,
    errors: FieldErrors | None = None,
    headers: Mapping[str, str] | None = None,
) -> HttpResponse:
    """A problem+json response; `errors` maps each field to its messages."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = {field: list(messages) for field, messages in errors.items()}
    response = HttpResponse(
        json.dumps(body, ensure_ascii=False).encode(),
        status=status,
        content_type=PROBLEM_CONTENT_TYPE,
        headers=headers,
    )
    response["Cache-Control"] = "no-store"
    return response


def _field_errors(detail: Any) -> dict[str, list[str]]:
    if isinstance(detail, Mapping):
        return {
            str(field): [str(message) for message in messages]
            if isinstance(messages, list)
            else [str(messages)]
            for field, messages in detail.items()
        }
    messages = detail if isinstance(detail, list) else [detail]
    return {"non_field_errors": [str(message) for message in messages]}


def api_exception_handler(exc: Exception, context: Mapping[str, Any]) -> HttpResponse | None:
    """DRF's EXCEPTION_HANDLER: the client's errors become problems; ours go to Django (None)."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, SuspiciousOperation):
        # Too many query parameters, a disallowed host and the like: the
        # client's mistake, and logged by Django as a security event already.
        return problem_response(status=400, detail="The request is malformed.")
    if isinstance(exc, exceptions.ValidationError):
        errors = _field_errors(exc.detail)
        detail = " ".join(message for messages in errors.values() for message in messages)
        return problem_response(status=400, detail=detail, errors=errors)
    if isinstance(exc, exceptions.Throttled):
        wait = max(1, int(getattr(exc, "wait", None) or 1))
        return problem_response(
            status=429,
            detail=f"Too many requests; retry in {wait} seconds.",
            headers={"Retry-After": str(wait)},
        )
    if isinstance(exc, exceptions.APIException):
        retry_after = getattr(exc, "retry_after_seconds", None)
        return problem_response(
            status=exc.status_code,
            detail=str(exc.detail),
            headers={"Retry-After": str(retry_after)} if retry_after else None,
        )
    # Anything else is our failure: DRF re-raises it, so that it takes Django's
    # own 500 path (got_request_exception, the django.request logger, error
    # trackers, mail_admins) and handler500 (server_error) answers the problem.
    return None


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler404: problem details under /api/, Django's page elsewhere."""
    if is_api_request(request):
        return problem_response(status=404, detail=f"No resource at {request.path}.")
    return defaults.page_not_found(request, exception or Exception())


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: problem details under /api/, Django's page elsewhere."""
    if is_api_request(request):
        return problem_response(status=500, detail="The server failed to answer; try again later.")
    return defaults.server_error(request)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler400 (for example a disallowed Host): problem details under /api/."""
    if is_api_request(request):
        return problem_response(status=400, detail="The request is malformed.")
    return defaults.bad_request(request, exception or Exception())
