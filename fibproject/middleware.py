"""Django's session, CSRF, authentication and message middleware, kept off the public API.

They exist for the admin. The public API under /api/ is anonymous and
stateless: its DRF views have no authentication classes and are CSRF-exempt,
and it never shows messages. Run there, these four would cost every API
request a session store, a CSRF cookie read, a lazy user and a message
storage, for nothing: together about a tenth of the request.

Each class is Django's own, subclassed, so that the admin's system checks
(admin.E408 to E410) still find them, and the admin gets exactly Django's
behaviour. Without a session there are no ambient credentials under /api/, so
CSRF has nothing to protect there.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpRequest, HttpResponseForbidden
from django.middleware.csrf import CsrfViewMiddleware

from fibonacci.api.scope import is_api_request


class SiteOnlyMixin:
    """Passes public API requests straight through; everything else gets the middleware."""

    get_response: Any

    def __call__(self, request: HttpRequest) -> Any:
        if is_api_request(request):
            return self.get_response(request)
        return super().__call__(request)  # type: ignore[misc]


class SiteSessionMiddleware(SiteOnlyMixin, SessionMiddleware):
    """Django's SessionMiddleware, except on the public API."""


class SiteCsrfViewMiddleware(SiteOnlyMixin, CsrfViewMiddleware):
    """Django's CsrfViewMiddleware, except on the public API."""

    def process_view(
        self, request: HttpRequest, callback: Any, callback_args: Any, callback_kwargs: Any
    ) -> HttpResponseForbidden | None:
        if is_api_request(request):
            return None
        return super().process_view(request, callback, callback_args, callback_kwargs)


class SiteAuthenticationMiddleware(SiteOnlyMixin, AuthenticationMiddleware):
    """Django's AuthenticationMiddleware, except on the public API."""


class SiteMessageMiddleware(SiteOnlyMixin, MessageMiddleware):
    """Django's MessageMiddleware, except on the public API."""
