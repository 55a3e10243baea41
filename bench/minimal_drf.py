"""The benchmark's floor for the Python cycle: a minimal DRF ViewSet with the API's answer shape.

What a plain Django REST framework project serving the same URL would do: a
query serializer validates n and offset, a response serializer with the field
layout of SequenceResponseSerializer (n, offset, sequence) builds the data,
DRF's JSONRenderer writes it (compact, so the bytes equal the app's JSON).
No rate limiter, no request log, no ETag, Django's security and common
middleware only. The terms are computed once at import (gunicorn's --preload
does it in the master), as the app prepares its table; the work per request
is DRF's own. gunicorn serves it as `bench.minimal_drf:application`.
"""

from __future__ import annotations

from typing import Any

import django
from django.conf import settings

MAX_N = 10_000

settings.configure(
    DEBUG=False,
    SECRET_KEY="bench-minimal-drf-not-a-secret",
    ALLOWED_HOSTS=["127.0.0.1", "localhost", "[::1]"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "rest_framework"],
    MIDDLEWARE=[
        "django.middleware.security.SecurityMiddleware",
        "django.middleware.common.CommonMiddleware",
    ],
    DATABASES={},
    USE_TZ=True,
    REST_FRAMEWORK={
        "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
        "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
        "DEFAULT_AUTHENTICATION_CLASSES": [],
        "DEFAULT_PERMISSION_CLASSES": [],
        "DEFAULT_THROTTLE_CLASSES": [],
        "UNAUTHENTICATED_USER": None,
    },
)
django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402 - after settings.configure
from rest_framework import routers, serializers, viewsets  # noqa: E402
from rest_framework.request import Request  # noqa: E402
from rest_framework.response import Response  # noqa: E402


def _terms(count: int) -> list[int]:
    terms, a, b = [], 0, 1
    for _ in range(count):
        terms.append(a)
        a, b = b, a + b
    return terms


TERMS = _terms(MAX_N)


class MinimalQuerySerializer(serializers.Serializer):
    """n and offset, with offset + n at most MAX_N."""

    n = serializers.IntegerField(min_value=0, max_value=MAX_N)
    offset = serializers.IntegerField(min_value=0, max_value=MAX_N, default=0)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """The window must lie within the prepared terms."""
        if attrs["offset"] + attrs["n"] > MAX_N:
            raise serializers.ValidationError(f"offset + n must be at most {MAX_N}")
        return attrs


class MinimalSequenceSerializer(serializers.Serializer):
    """The field layout of the app's SequenceResponseSerializer."""

    n = serializers.IntegerField()
    offset = serializers.IntegerField()
    sequence = serializers.ListField(child=serializers.IntegerField())


class MinimalFibonacciViewSet(viewsets.ViewSet):
    """GET /api/v1/fibonacci/?n=N[&offset=K], the plain DRF way."""

    def list(self, request: Request) -> Response:
        """F(offset) .. F(offset + n - 1)."""
        query = MinimalQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        n, offset = query.validated_data["n"], query.validated_data["offset"]
        body = MinimalSequenceSerializer(
            {"n": n, "offset": offset, "sequence": TERMS[offset : offset + n]}
        )
        return Response(body.data)


router = routers.SimpleRouter()
router.register("api/v1/fibonacci", MinimalFibonacciViewSet, basename="fibonacci")
urlpatterns = router.urls

application = get_wsgi_application()
