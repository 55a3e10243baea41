"""The admin's login, throttled: failed logins counted per client address and per username.

Every login attempt hashes a password (about 0.3-0.5 s of CPU), so unthrottled
guessing both tries passwords and starves the API of workers. Failures are
counted by django-ratelimit in the `ratelimit` cache (Redis, shared by every
worker and machine, when REDIS_URL is set), per client address
(FIB_ADMIN_LOGIN_RATE, the address's budget key: IPv6 per /64) and per
username (FIB_ADMIN_LOGIN_USERNAME_RATE, across addresses). Once either
budget is spent, the login page answers 429 with Retry-After and says so,
without checking the password: a refused attempt costs no hashing.

Only failures count, so an operator who logs in is never refused for having
logged in before. The check comes before the attempt and the count after it,
so attempts already in flight when the budget runs out may still be checked;
nginx's stricter zone for /admin/login/ bounds how many those can be.
When the counters cannot be reached, logins are not throttled (the failure is
logged once per interval): an operator must be able to get in during an outage.
"""

from __future__ import annotations

import logging
import time
import unicodedata
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse

from fibonacci import addresses
from fibonacci.ratelimit.budgets import OUTAGE_RETRY_SECONDS, budget_usage
from fibonacci.ratelimit.identity import client_ip

logger = logging.getLogger(__name__)

# Where the form leaves a refusal for the view, on the request it was given.
_REFUSAL_ATTRIBUTE = "fibproject_login_refusal"


@dataclass(frozen=True, slots=True)
class LoginRefusal:
    """Why a login attempt is refused (`whose`: the address or the username), and for how long."""

    whose: str
    retry_after_seconds: int

    @property
    def message(self) -> str:
        """What the login page says."""
        return (
            f"Too many failed logins {self.whose}. Try again in "
            f"{_duration(self.retry_after_seconds)}; the password was not checked."
        )


def _duration(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} seconds"
    return f"{(seconds + 59) // 60} minutes"


class _Outage:
    """Per-process memory of a counter failure, so that it is logged once per interval."""

    logged_at = -OUTAGE_RETRY_SECONDS

    @classmethod
    def record(cls, exc: Exception) -> None:
        now = time.monotonic()
        if now - cls.logged_at >= OUTAGE_RETRY_SECONDS:
            cls.logged_at = now
            logger.error(
                "admin login counters unavailable (%s: %s); logins are not throttled",
                type(exc).__name__,
                exc,
            )


def _budgets(request: HttpRequest, username: str) -> list[tuple[str, str, str]]:
    """(group, rate, key) of each budget this attempt is counted against."""
    budgets = [
        (
            "fibproject.admin_login.address",
            settings.FIB_ADMIN_LOGIN_RATE,
            addresses.budget_key(client_ip(request)),
        )
    ]
    if username:
        budgets.append(
            ("fibproject.admin_login.username", settings.FIB_ADMIN_LOGIN_USERNAME_RATE, username)
        )
    return budgets


def refusal(request: HttpRequest, *, username: str) -> LoginRefusal | None:
    """The refusal of this attempt when a budget is spent, else None; counts nothing."""
    try:
        for group, rate, key in _budgets(request, username):
            usage = budget_usage(
                request, name=group, group=group, rate=rate, key=key, increment=False
            )
            # Failures so far: the budget is spent once they reach the quota.
            if usage.remaining == 0:
                whose = "from your address" if group.endswith("address") else "for this username"
                return LoginRefusal(whose, retry_after_seconds=usage.reset_seconds)
    except Exception as exc:  # noqa: BLE001 - any cache failure is an outage
        _Outage.record(exc)
    return None


def record_failure(request: HttpRequest, *, username: str) -> None:
    """Count one failed login against the address and the username."""
    try:
        for group, rate, key in _budgets(request, username):
            budget_usage(request, name=group, group=group, rate=rate, key=key)
    except Exception as exc:  # noqa: BLE001 - any cache failure is an outage
        _Outage.record(exc)


def _normalized_username(raw: object) -> str:
    """One budget per username however it is spelled (case, Unicode form, spaces around)."""
    if not isinstance(raw, str):
        return ""
    return unicodedata.normalize("NFKC", raw).strip().casefold()


class ThrottledAuthenticationForm(AdminAuthenticationForm):
    """The admin's login form, refusing without hashing once a budget is spent."""

    def clean(self) -> dict[str, Any]:
        """Refuse a throttled attempt; otherwise authenticate, counting a failure."""
        username = _normalized_username(self.data.get("username"))
        if self.request is not None:
            refused = refusal(self.request, username=username)
            if refused is not None:
                setattr(self.request, _REFUSAL_ATTRIBUTE, refused)
                raise ValidationError(refused.message, code="throttled")
        try:
            return super().clean()
        except ValidationError:
            # A wrong password, an inactive account, or one that may not use the admin.
            if self.request is not None:
                record_failure(self.request, username=username)
            raise


def login(request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
    """The admin site's login view, answering a throttled attempt with 429 and Retry-After."""
    response = admin.site.login(request, extra_context)
    refused: LoginRefusal | None = getattr(request, _REFUSAL_ATTRIBUTE, None)
    if refused is not None:
        response.status_code = 429
        response["Retry-After"] = str(refused.retry_after_seconds)
    return response
