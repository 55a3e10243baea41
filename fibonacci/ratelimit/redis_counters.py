"""A Redis cache for django-ratelimit's counters: one round trip per counted request.

django-ratelimit counts with `cache.add(key, 1, ttl)` and, when the key
exists already, `cache.incr(key)`: two round trips (the second a Lua EVAL in
django-redis) for every request but a window's first. This backend answers
`add` without I/O, remembering the ttl, and makes `incr` one atomic script:
INCR, and EXPIRE when the INCR created the key. The count is the same; the
cost is one round trip, sent on a connection each thread keeps (taking one
from the pool and returning it per command cost as much again as the command).

Meant for the `ratelimit` cache alias only: its `add` is not a general add.
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django_redis.cache import RedisCache
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

_INCR_WITH_EXPIRY = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""
_SCRIPT_SHA = hashlib.sha1(_INCR_WITH_EXPIRY.encode()).hexdigest()
# EVALSHA <sha> 1 <key> <ttl> in Redis's wire format (RESP), all but the two
# arguments prepared once: redis-py's generic command packing cost more than
# the rest of the client's work for this one fixed command.
_EVALSHA_PREFIX = b"*5\r\n$7\r\nEVALSHA\r\n$40\r\n%b\r\n$1\r\n1\r\n" % _SCRIPT_SHA.encode()
_FALLBACK_TTL_SECONDS = 3600


class RateLimitCounterCache(RedisCache):
    """django-redis, with add-then-incr folded into one INCR + EXPIRE script."""

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._local = threading.local()

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
        connection, reused = self._connection()
        try:
            return self._count(connection, redis_key=redis_key, ttl_seconds=ttl_seconds)
        except RedisConnectionError:
            self._forget(connection)
            if not reused:
                raise
        # The kept connection had gone stale (a Redis restart, an idle timeout): once more.
        connection, _ = self._connection()
        try:
            return self._count(connection, redis_key=redis_key, ttl_seconds=ttl_seconds)
        except RedisConnectionError:
            self._forget(connection)
            raise

    def _count(self, connection: Any, *, redis_key: str, ttl_seconds: int) -> int:
        try:
            connection.send_packed_command([_evalsha_command(redis_key, ttl_seconds)])
            try:
                return int(connection.read_response())
            except NoScriptError:  # a restarted or flushed Redis: send the script itself
                connection.send_command("EVAL", _INCR_WITH_EXPIRY, 1, redis_key, ttl_seconds)
                return int(connection.read_response())
        except RedisConnectionError:
            raise
        except BaseException:
            self._forget(connection)  # possibly half-read: never reuse it
            raise

    def _connection(self) -> tuple[Any, bool]:
        # One connection per thread and process (a forked worker opens its own).
        held = getattr(self._local, "connection", None)
        if held is not None and self._local.pid == os.getpid():
            return held, True
        pool = self.client.get_client(write=True).connection_pool
        self._local.connection = pool.make_connection()
        self._local.pid = os.getpid()
        return self._local.connection, False

    def _forget(self, connection: Any) -> None:
        self._local.connection = None
        connection.disconnect()


def _evalsha_command(redis_key: str, ttl_seconds: int) -> bytes:
    """The packed EVALSHA of the counting script for one key."""
    key = redis_key.encode()
    ttl = b"%d" % ttl_seconds
    return b"%b$%d\r\n%b\r\n$%d\r\n%b\r\n" % (_EVALSHA_PREFIX, len(key), key, len(ttl), ttl)
