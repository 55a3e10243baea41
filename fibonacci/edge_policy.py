"""What the edge's limiter must know of the app, computed from the app's own rules.

nginx (deploy/edge/fib_edge.lua) counts the same budgets as the app for every
request, cache hits included, so it needs the app's answers to: which budgets,
at what rates; which requests are large; which URLs spend; what a counter is
called and where it lives; what a refusal looks like. Each answer comes from
its one home here, never from a second copy in the Lua:

- budgets and rates: fibonacci.ratelimit.budgets.api_budgets;
- "large": the per-offset table of budgets.large_counts (is_large reads it
  too) and FIB_LARGE_INDEX;
- the spending URLs: reversed from the URLconf;
- a counter's name: django-ratelimit's rule (``RATELIMIT_CACHE_PREFIX`` plus
  the MD5 of group, rate, client key and window end, the window end staggered
  by the key's CRC-32), under the `ratelimit` cache's own key prefix;
- the 429 and 503 bodies: rendered by the API's exception handler.

`manage.py edge_policy --output FILE` writes it as a Lua table for nginx.
"""

from __future__ import annotations

import functools
import hashlib
import re
import urllib.parse
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.urls import reverse
from django_ratelimit.core import EXPIRATION_FUDGE
from rest_framework import exceptions

from fibonacci.api.errors import api_exception_handler, problem_response
from fibonacci.api.responses import PRECONDITION_FAILED_DETAIL, REPRESENTATION_VERSION
from fibonacci.ratelimit.budgets import (
    LOCAL_CACHE_BACKENDS,
    OUTAGE_RETRY_SECONDS,
    RateLimiterUnavailable,
    api_budgets,
    large_counts,
)
from fibonacci.ratelimit.rates import parse_rate
from fibonacci.ratelimit.redis_counters import COUNT_SCRIPT, RateLimitCounterCache

# Stands for the seconds to wait in the 429 body; the Lua writes the real number.
_WAIT_PLACEHOLDER = 987654321
_INDEX_PLACEHOLDER = "index0placeholder"


def _body(exc: exceptions.APIException) -> tuple[str, dict[str, str]]:
    response = api_exception_handler(exc, {})
    assert response is not None  # an APIException always becomes a problem
    headers = {name: response[name] for name in ("Content-Type", "Cache-Control")}
    return response.content.decode(), headers


def _precondition_failed() -> dict[str, Any]:
    """The 412 the app answers, which nginx answers itself for a cached answer."""
    response = problem_response(status=412, detail=PRECONDITION_FAILED_DETAIL)
    headers = {name: response[name] for name in ("Content-Type", "Cache-Control")}
    return {"body": response.content.decode(), "headers": headers}


def _counters() -> dict[str, Any]:
    """Where the counters live: the `ratelimit` cache's Redis, or nginx's shared memory."""
    alias = settings.RATELIMIT_USE_CACHE
    config: dict[str, Any] = settings.CACHES[alias]
    if config["BACKEND"] in LOCAL_CACHE_BACKENDS:
        return {"store": "shm"}
    cache = caches[alias]
    if not isinstance(cache, RateLimitCounterCache):
        raise ImproperlyConfigured(
            f"the edge counts in Redis through {RateLimitCounterCache.__module__}; "
            f"the {alias!r} cache is {config['BACKEND']}"
        )
    url = urllib.parse.urlsplit(config["LOCATION"])
    address: dict[str, Any]
    if url.scheme == "unix":
        address = {"socket": f"unix:{url.path}"}
    elif url.scheme == "redis":
        address = {"host": url.hostname or "127.0.0.1", "port": url.port or 6379}
    else:
        raise ImproperlyConfigured(
            f"the edge reaches Redis over redis:// or unix://, not {url.scheme}://"
        )
    query = urllib.parse.parse_qs(url.query)
    db = url.path.strip("/") if url.scheme == "redis" else query.get("db", ["0"])[0]
    timeout = config.get("OPTIONS", {}).get("SOCKET_TIMEOUT", 0.5)
    return {
        "store": "redis",
        **address,
        "db": int(db or 0),
        "username": urllib.parse.unquote(url.username) if url.username else None,
        "password": urllib.parse.unquote(url.password) if url.password else None,
        "timeout_ms": int(timeout * 1000),
        # django-redis's own naming (KEY_PREFIX:VERSION:key), asked of the cache itself.
        "key_prefix": str(cache.make_key("")),
        "script": COUNT_SCRIPT.read_text(),
    }


def _pattern(path: str) -> str:
    """A PCRE pattern matching exactly `path`, with the index placeholder as a capture."""
    escaped = re.escape(path).replace(_INDEX_PLACEHOLDER, "(" + _detail_index_regex() + ")")
    return f"^{escaped}$"


def _detail_index_regex() -> str:
    from fibonacci.api.views import FibonacciViewSet

    return FibonacciViewSet.lookup_value_regex


def edge_policy() -> dict[str, Any]:
    """Everything deploy/edge/fib_edge.lua reads, from the settings and the app's rules."""
    algorithm = getattr(settings, "RATELIMIT_HASH_ALGORITHM", None)
    if algorithm not in {"hashlib.md5", hashlib.md5}:
        raise ImproperlyConfigured("the edge names counters with MD5: RATELIMIT_HASH_ALGORITHM")
    throttled, throttled_headers = _body(exceptions.Throttled(wait=_WAIT_PLACEHOLDER))
    unavailable, unavailable_headers = _body(RateLimiterUnavailable())
    budgets = []
    for budget in api_budgets():
        rate = parse_rate(budget.rate)
        budgets.append(
            {
                "name": budget.name,
                "group": budget.group,
                "quota": rate.count,
                "window": rate.window_seconds,
                "ttl": rate.window_seconds + EXPIRATION_FUDGE,
            }
        )
    return {
        "enabled": settings.FIB_RATE_LIMIT_ENABLED,
        "fail_closed": settings.FIB_RATE_LIMIT_FAIL_CLOSED,
        "outage_seconds": OUTAGE_RETRY_SECONDS,
        "counters": _counters(),
        "cache_prefix": getattr(settings, "RATELIMIT_CACHE_PREFIX", "rl:"),
        "budgets": budgets,
        "sequence_path": _pattern(reverse("fibonacci:fibonacci-list")),
        "term_path": _pattern(
            reverse("fibonacci:fibonacci-detail", kwargs={"index": _INDEX_PLACEHOLDER})
        ),
        "max_n": settings.FIB_MAX_N,
        "max_index": settings.FIB_MAX_INDEX,
        "large_index": settings.FIB_LARGE_INDEX,
        # large_counts[offset + 1] in Lua: the largest n at that offset that is not large.
        "large_counts": list(large_counts(settings.FIB_MAX_N, settings.FIB_LARGE_N)),
        "max_fields": settings.DATA_UPLOAD_MAX_NUMBER_FIELDS or 0,
        "log_each_per_minute": settings.FIB_EDGE_LOG_EACH_PER_MINUTE,
        "representation_version": REPRESENTATION_VERSION,
        "throttled": {
            "body": throttled.replace("%", "%%").replace(str(_WAIT_PLACEHOLDER), "%d"),
            "headers": throttled_headers,
        },
        "precondition_failed": _precondition_failed(),
        "unavailable": {
            "body": unavailable,
            "headers": unavailable_headers,
            "retry_after": str(RateLimiterUnavailable.retry_after_seconds),
        },
    }


def to_lua(value: Any) -> str:
    """`value` (dicts with str keys, lists, str, int, float, bool, None) as a Lua expression."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + "".join(_lua_char(char) for char in value) + '"'
    if isinstance(value, list | tuple):
        return "{" + ",".join(to_lua(item) for item in value) + "}"
    if isinstance(value, dict):
        return "{" + ",".join(f"[{to_lua(str(k))}]={to_lua(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no Lua form for {type(value).__name__}")


def _lua_char(char: str) -> str:
    if char in '"\\':
        return "\\" + char
    if " " <= char <= "~":
        return char
    return "".join(f"\\{byte}" for byte in char.encode())


@functools.cache
def policy_fingerprint() -> str:
    """A digest of this process's policy: the edge sends its own with every request
    it counted (fibonacci.edge), so that a stale policy file is noticed."""
    return hashlib.sha256(to_lua(edge_policy()).encode()).hexdigest()[:16]


def edge_policy_lua() -> str:
    """The policy as the Lua chunk nginx loads (`return {...}`), with its fingerprint."""
    policy = edge_policy() | {"fingerprint": policy_fingerprint()}
    return (
        "-- Written by `manage.py edge_policy` from the app's settings; do not edit.\n"
        f"return {to_lua(policy)}\n"
    )
