"""The typed readers of the environment: every setting of ours is read through one of these.

Used by fibproject/settings.py and deploy/gunicorn.conf.py, so that a value
means the same to both. An unset variable takes the default (so does a blank number); a
malformed one stops the start with a message naming the variable. No Django
settings are read here (gunicorn's config imports this before Django starts).
"""

from __future__ import annotations

import os

from django.core.exceptions import ImproperlyConfigured

from fibonacci.ratelimit.identity import UNIX_SOCKET, parse_trusted_proxies
from fibonacci.ratelimit.rates import parse_rate

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def env_str(name: str, default: str = "") -> str:
    """The variable, stripped; `default` when unset (set but blank stays blank)."""
    return os.environ.get(name, default).strip()


def env_bool(name: str, *, default: bool) -> bool:
    """true/false (also 1/0, yes/no, on/off, any case)."""
    raw = env_str(name).lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {raw!r}")


def parse_int(raw: str, *, minimum: int = 0) -> int:
    """A decimal integer of at least `minimum` (ASCII digits only: no sign, no spaces inside).

    The rule of every integer setting, also for deploy's command line; ValueError otherwise.
    """
    if not (raw.isascii() and raw.isdigit()) or int(raw) < minimum:
        raise ValueError(f"must be an integer >= {minimum}, not {raw!r}")
    return int(raw)


def env_int(name: str, *, default: int, minimum: int = 0) -> int:
    """An integer setting (parse_int's rule); `default` when unset or blank."""
    raw = env_str(name)
    if not raw:
        return default
    try:
        return parse_int(raw, minimum=minimum)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} {exc}") from None


def env_rate(name: str, *, default: str) -> str:
    """A rate such as 120/m or 100/5m (fibonacci.ratelimit.rates), kept as written."""
    raw = env_str(name, default)
    try:
        parse_rate(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must look like 120/m or 100/5m, not {raw!r}") from None
    return raw


def env_list(name: str, default: str = "") -> list[str]:
    """Comma-separated values, each stripped; empty items dropped."""
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


def env_trusted_proxies(name: str) -> list[str]:
    """Our proxies: comma-separated addresses, CIDRs or `unix` (fibonacci.ratelimit.identity)."""
    entries = env_list(name)
    try:
        parse_trusted_proxies(entries)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} has an invalid entry: {exc}") from None
    return entries


def env_networks(name: str) -> list[str]:
    """Client networks: comma-separated addresses or CIDRs (the rule of FIB_TRUSTED_PROXIES,
    without `unix`)."""
    entries = env_list(name)
    try:
        if UNIX_SOCKET in entries:
            raise ValueError(f"{UNIX_SOCKET!r} names no client network")
        parse_trusted_proxies(entries)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} has an invalid entry: {exc}") from None
    return entries


def env_choice(name: str, *, choices: tuple[str, ...], default: str) -> str:
    """One of `choices` (any case); `default` when unset or blank."""
    raw = env_str(name).lower() or default
    if raw not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, not {raw!r}")
    return raw
