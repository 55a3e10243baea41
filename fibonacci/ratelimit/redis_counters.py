"""A Redis cache for django-ratelimit's counters: one round trip per counted request.

django-ratelimit counts with `cache.add(key, 1, ttl)` and, when the key
exists already, `cache.incr(key)`: two round trips (the second a Lua EVAL in
django-redis) for every request but a window's first. This backend answers
`add` without I/O, remembering the ttl, and makes `incr` one atomic script
(redis-py's `Script`): INCR, and EXPIRE when the INCR created the key. The
script is count.lua beside this module, which the edge (deploy/edge) runs too. The
count is the same; the cost is one round trip on django-redis's own client,
whose pool reconnects after a Redis restart and after a fork.

Meant for the `ratelimit` cache alias only: its `add` is not a general add.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django_redis.cache import RedisCache
from redis.commands.core import Script

# INCR each key, EXPIRE it when new; shared with the edge's limiter.
COUNT_SCRIPT = Path(__file__).with_name("count.lua")
_INCR_WITH_EXPIRY = COUNT_SCRIPT.read_text()
_FALLBACK_TTL_SECONDS = 3600


class RateLimitCounterCache(RedisCache):
    """django-redis, with add-then-incr folded into one INCR + EXPIRE script."""

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._local = threading.local()
        self._script: Script | None = None

    def add(
        self,
        key: str,
        value: Any,
        timeout: float | None = DEFAULT_TIMEOUT,
        version: int | None = None,
        client: Any = None,
    ) -> bool:
        """Remember the ttl for the `incr` that follows; the key is created there."""
        seconds = timeout if isinstance(timeout, int | float) and timeout else None
        self._local.ttl_seconds = int(seconds or _FALLBACK_TTL_SECONDS)
        return False

    def incr(self, key: str, delta: int = 1, version: int | None = None, client: Any = None) -> int:
        """Count one more, creating the key with the remembered ttl when it is new."""
        ttl_seconds = getattr(self._local, "ttl_seconds", _FALLBACK_TTL_SECONDS)
        redis_key = self.client.make_key(key, version=version)
        # Script sends EVALSHA and, when Redis lacks the script (restarted or
        # flushed), loads it and sends it again.
        (count,) = self._counting_script()(keys=[redis_key], args=[ttl_seconds])
        return int(count)

    def _counting_script(self) -> Script:
        if self._script is None:
            self._script = self.client.get_client(write=True).register_script(_INCR_WITH_EXPIRY)
        return self._script
