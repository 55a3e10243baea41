"""System checks for the service's own settings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core import checks
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.module_loading import import_string

from .ratelimit.budgets import LOCAL_CACHE_BACKENDS
from .ratelimit.identity import parse_trusted_proxies


@checks.register(checks.Tags.security, deploy=True)
def check_shared_rate_limit_counters(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Production should count rate limits in a shared cache."""
    backend = settings.CACHES[settings.RATELIMIT_USE_CACHE]["BACKEND"]
    if settings.FIB_RATE_LIMIT_ENABLED and backend in LOCAL_CACHE_BACKENDS:
        return [
            checks.Warning(
                "Rate limits are counted in a process-local cache: each process counts alone.",
                hint="Set REDIS_URL so that every worker and machine shares the counters.",
                id="fibonacci.W001",
            )
        ]
    return []


@checks.register()
def check_trusted_proxies(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """FIB_TRUSTED_PROXIES must hold addresses, CIDRs or `unix`."""
    try:
        parse_trusted_proxies(settings.FIB_TRUSTED_PROXIES)
    except ValueError as exc:
        return [
            checks.Error(
                f"FIB_TRUSTED_PROXIES has an invalid entry: {exc}",
                hint="Use addresses or CIDRs such as 10.0.0.5,192.168.0.0/24, or unix.",
                id="fibonacci.E001",
            )
        ]
    return []


@checks.register(checks.Tags.security, deploy=True)
def check_csrf_protection(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """CSRF middleware installed, with a Secure cookie: Django's W003 and W016, subclass-aware.

    Django's own checks look for CsrfViewMiddleware by its dotted path, so they
    miss fibproject.middleware.SiteCsrfViewMiddleware (W003 is silenced in
    settings, and W016 would never run); these two stand in for them.
    """
    installed = [import_string(path) for path in settings.MIDDLEWARE]
    if not any(isinstance(cls, type) and issubclass(cls, CsrfViewMiddleware) for cls in installed):
        return [
            checks.Warning(
                "No CSRF middleware (CsrfViewMiddleware or a subclass) is in MIDDLEWARE.",
                hint="The admin needs it: keep fibproject.middleware.SiteCsrfViewMiddleware.",
                id="fibonacci.W002",
            )
        ]
    if not settings.CSRF_USE_SESSIONS and not settings.CSRF_COOKIE_SECURE:
        return [
            checks.Warning(
                "CSRF_COOKIE_SECURE is off: the admin's CSRF cookie may travel over plain HTTP.",
                hint="Leave DJANGO_SECURE_COOKIES unset (on) in production behind TLS.",
                id="fibonacci.W003",
            )
        ]
    return []
