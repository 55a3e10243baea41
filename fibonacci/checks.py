"""System checks for the service's own settings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core import checks

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
