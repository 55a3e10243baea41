"""ClientRateLimitMixin: attaches the per-client budgets to a DRF view."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from .budgets import Throttled, Usage, spend_budgets
from .headers import rate_limit_headers


class ClientRateLimitMixin:
    """For API views: per-client limits, 429 when spent, RateLimit headers on every answer."""

    rate_limit_usages: Sequence[Usage] = ()

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        # Counted before content negotiation: a request refused with 406, or
        # 400 for an unknown format, spends its budget too.
        try:
            self.rate_limit_usages = spend_budgets(request, self)  # type: ignore[arg-type]
        except Throttled as exc:
            self.rate_limit_usages = exc.usages
            raise
        super().initial(request, *args, **kwargs)  # type: ignore[misc]

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]
        for name, value in rate_limit_headers(self.rate_limit_usages).items():
            response[name] = value
        return response
