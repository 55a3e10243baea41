"""FibonacciViewSet: validate the query, call the service, respond."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpResponseBase
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import viewsets
from rest_framework.request import Request
from rest_framework.serializers import Serializer

from fibonacci import sequence
from fibonacci.ratelimit.mixins import ClientRateLimitMixin
from fibonacci.sequence import NumberStyle

from .errors import PROBLEM_CONTENT_TYPE
from .renderers import (
    FibonacciBrowsableAPIRenderer,
    FibonacciJSONRenderer,
    FibonacciTextRenderer,
)
from .responses import immutable_response
from .serializers import (
    ProblemSerializer,
    SequenceQuerySerializer,
    SequenceResponseSerializer,
    TermQuerySerializer,
    TermResponseSerializer,
)

_RENDERERS = (FibonacciJSONRenderer, FibonacciTextRenderer, FibonacciBrowsableAPIRenderer)
_FORMAT = OpenApiParameter(
    "format",
    str,
    enum=sorted(str(renderer.format) for renderer in _RENDERERS),
    description="Overrides the Accept header; given at most once.",
)
_NUMBERS = OpenApiParameter(
    "numbers",
    str,
    enum=[style.value for style in NumberStyle],
    default=NumberStyle.NUMBER.value,
    description="`string` writes every number as a decimal string (exact in JavaScript).",
)


def _answers(body: type[Serializer], text: str, *, not_found: bool) -> dict[Any, Any]:
    """What an operation answers: its body in each format, 304, and problem details."""
    problems: list[tuple[int, str]] = [
        (400, "A parameter breaks its rule (the problem's `errors` name it)."),
        (406, "No representation matches the Accept header."),
        (412, "If-Match or If-Unmodified-Since does not hold."),
        (429, "The client's rate limit is spent; Retry-After says when to retry."),
        (503, "The rate limiter's counters are unreachable (fail-closed setting)."),
    ]
    if not_found:
        # The index is matched as any segment; one holding an encoded "/" is no URL of ours.
        problems.append((404, "No resource at this path."))
    return {
        (200, "application/json"): body,
        (200, "text/plain"): OpenApiResponse(OpenApiTypes.STR, description=text),
        (200, "text/html"): OpenApiResponse(
            OpenApiTypes.STR, description="The browsable page (`format=api`)."
        ),
        304: OpenApiResponse(description="Not Modified: the client's copy (its ETag) is current."),
        **{
            (status, PROBLEM_CONTENT_TYPE): OpenApiResponse(ProblemSerializer, description=why)
            for status, why in problems
        },
    }


class FibonacciAutoSchema(AutoSchema):
    """The API's operations, with the bounds of the path's index read when the schema is made."""

    def get_override_parameters(self) -> list[Any]:
        parameters = super().get_override_parameters()
        if getattr(self.view, "action", None) == "retrieve":
            index = OpenApiParameter(
                "index",
                {"type": "integer", "minimum": 0, "maximum": settings.FIB_MAX_INDEX},
                OpenApiParameter.PATH,
                description="The term's index, at most FIB_MAX_INDEX (default 100000).",
            )
            parameters = [*parameters, index]
        return parameters


@extend_schema_view(
    list=extend_schema(
        summary="The first n Fibonacci numbers from F(offset)",
        parameters=[SequenceQuerySerializer, _FORMAT],
        responses=_answers(
            SequenceResponseSerializer,
            "The numbers in decimal, separated by spaces, then a newline.",
            not_found=False,
        ),
    ),
    retrieve=extend_schema(
        summary="One Fibonacci number, F(index)",
        parameters=[_NUMBERS, _FORMAT],
        responses=_answers(
            TermResponseSerializer, "The number in decimal, then a newline.", not_found=True
        ),
    ),
)
class FibonacciViewSet(ClientRateLimitMixin, viewsets.ViewSet):
    """The public Fibonacci API: a window of the sequence, or one term."""

    # Public and anonymous: no authentication, permission or session work;
    # ClientRateLimitMixin counts each request against the client's budget.
    authentication_classes = ()
    permission_classes = ()
    renderer_classes = _RENDERERS
    schema = FibonacciAutoSchema()
    lookup_field = "index"
    # Anything may reach the serializer, so a malformed index is a 400, not a 404.
    lookup_value_regex = "[^/]+"

    def perform_authentication(self, request: Request) -> None:
        """Nothing to authenticate; DRF's documented way to skip the per-request work."""

    def list(self, request: Request) -> HttpResponseBase:
        """F(offset) .. F(offset + n - 1)."""
        query = SequenceQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        window = sequence.sequence_window(
            offset=query.validated_data["offset"],
            count=query.validated_data["n"],
            style=query.validated_data["numbers"],
            table_size=settings.FIB_MAX_N,
        )
        return immutable_response(request, window)

    def retrieve(self, request: Request, index: str) -> HttpResponseBase:
        """F(index)."""
        data = request.query_params.copy()
        data["index"] = index
        query = TermQuerySerializer(data=data)
        query.is_valid(raise_exception=True)
        term = sequence.term(
            index=query.validated_data["index"],
            style=query.validated_data["numbers"],
            table_size=settings.FIB_MAX_N,
        )
        return immutable_response(request, term)
