"""FibonacciViewSet: validate the query, call the service, respond."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpResponseBase
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import viewsets
from rest_framework.request import Request

from fibonacci import sequence
from fibonacci.ratelimit.mixins import ClientRateLimitMixin

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

_PROBLEMS = {
    (status, "application/problem+json"): ProblemSerializer for status in (400, 404, 406, 429, 503)
}
_FORMAT = OpenApiParameter(
    "format", str, enum=["json", "text", "api"], description="Overrides the Accept header."
)


@extend_schema_view(
    list=extend_schema(
        summary="The first n Fibonacci numbers from F(offset)",
        parameters=[SequenceQuerySerializer, _FORMAT],
        responses={200: SequenceResponseSerializer, **_PROBLEMS},
    ),
    retrieve=extend_schema(
        summary="One Fibonacci number, F(index)",
        parameters=[
            OpenApiParameter("index", OpenApiTypes.INT, OpenApiParameter.PATH),
            OpenApiParameter("numbers", str, enum=["number", "string"]),
            _FORMAT,
        ],
        responses={200: TermResponseSerializer, **_PROBLEMS},
    ),
)
class FibonacciViewSet(ClientRateLimitMixin, viewsets.ViewSet):
    """The public Fibonacci API: a window of the sequence, or one term."""

    # Public and anonymous: no authentication, permission or session work;
    # ClientRateLimitMixin counts each request against the client's budget.
    authentication_classes = ()
    permission_classes = ()
    renderer_classes = (
        FibonacciJSONRenderer,
        FibonacciTextRenderer,
        FibonacciBrowsableAPIRenderer,
    )
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
