"""The IETF RateLimit and RateLimit-Policy fields: how a client sees its budgets."""

from __future__ import annotations

from collections.abc import Sequence

from .budgets import Usage


def rate_limit_headers(usages: Sequence[Usage]) -> dict[str, str]:
    """IETF RateLimit-Policy and RateLimit fields for the budgets a request spent."""
    if not usages:
        return {}
    return {
        "RateLimit-Policy": ", ".join(
            f'"{u.name}";q={u.quota};w={u.window_seconds}' for u in usages
        ),
        "RateLimit": ", ".join(f'"{u.name}";r={u.remaining};t={u.reset_seconds}' for u in usages),
    }
