"""Liveness and readiness probes for load balancers and orchestrators.

/readyz is public and cheap: its checks (one database query, three cache
operations) run at most once per READINESS_INTERVAL_SECONDS per process, so
a flood of probes costs one check per interval. The database query runs in
a thread of its own with a deadline: a database that accepts connections but
never answers (a frozen server) makes /readyz answer 503 within
DATABASE_DEADLINE_SECONDS instead of holding the worker. Its detail (cache,
rate limiter, request-log buffer and spool) is shown to operators only:
clients on this host (loopback) or in FIB_TRUSTED_PROXIES.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field

from django.conf import settings
from django.core.cache import caches
from django.db import close_old_connections, connection, connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_safe

from requestlog import buffer as request_log

from . import addresses
from .api.errors import problem_response
from .ratelimit.budgets import limiter_state
from .ratelimit.identity import client_ip, is_trusted_address

logger = logging.getLogger(__name__)

_OK = b'{"status":"ok"}'
# A probe answer is reused this long: one check per process per interval.
READINESS_INTERVAL_SECONDS = 1.0
# The longest /readyz waits for the database's answer.
DATABASE_DEADLINE_SECONDS = 1.0


@require_safe
def healthz(request: HttpRequest) -> HttpResponse:
    """200 while the process can answer; touches no database or cache."""
    return HttpResponse(_OK, content_type="application/json", headers={"Cache-Control": "no-store"})


def _database_fault() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        logger.warning("readiness: database unavailable: %s", exc)
        return "database unavailable"
    return None


@dataclass(slots=True)
class _DatabaseReply:
    """One probe's answer, set by the probe thread."""

    done: threading.Event = field(default_factory=threading.Event)
    fault: str | None = None


class DatabaseProbe:
    """Asks the database in a thread of this process's own, so the caller can stop waiting.

    A query to a frozen server blocks in the kernel, where no timeout of the
    driver reaches it; the thread stays blocked (keeping its one connection)
    and every probe meanwhile answers at once that the database does not answer.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wanted = threading.Condition(self._lock)
        self._queued: _DatabaseReply | None = None
        self._close_wanted = False
        self._current: _DatabaseReply | None = None
        self._thread_pid: int | None = None

    def _serve(self) -> None:
        while True:
            with self._wanted:
                while self._queued is None and not self._close_wanted:
                    self._wanted.wait()
                reply, self._queued = self._queued, None
                close, self._close_wanted = self._close_wanted, False
            if close:
                connections.close_all()  # this thread's connections only
            if reply is not None:
                close_old_connections()  # drop a broken or old connection first
                reply.fault = _database_fault()
                reply.done.set()

    def fault(self, *, deadline_seconds: float) -> str | None:
        """None when the database answers SELECT 1 in time, else what went wrong."""
        with self._wanted:
            if self._current is not None and not self._current.done.is_set():
                return "database did not answer"  # the previous probe is still waiting for it
            if self._thread_pid != os.getpid():  # first use, or a forked child without the thread
                threading.Thread(target=self._serve, name="readyz-database", daemon=True).start()
                self._thread_pid = os.getpid()
            reply = self._current = self._queued = _DatabaseReply()
            self._wanted.notify()
        if reply.done.wait(deadline_seconds):
            return reply.fault
        logger.warning("readiness: database did not answer within %.1f s", deadline_seconds)
        return f"database did not answer within {deadline_seconds:g} s"

    def close_connection(self) -> None:
        """Have the probe thread close its connection (it opens a new one when asked again)."""
        with self._wanted:
            if self._thread_pid == os.getpid():
                self._close_wanted = True
                self._wanted.notify()


_database_probe = DatabaseProbe()


def _cache_fault() -> str | None:
    # The cache the rate limiter counts in: its outage is what /readyz reports.
    cache = caches[settings.RATELIMIT_USE_CACHE]
    probe_key = f"readyz:{uuid.uuid4().hex}"
    try:
        cache.set(probe_key, 1, timeout=5)
        answered = cache.get(probe_key) == 1
        cache.delete(probe_key)
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        logger.warning("readiness: cache unavailable: %s", exc)
        return "cache unavailable"
    return None if answered else "cache did not return what was stored"


@dataclass(frozen=True, slots=True)
class Readiness:
    """One round of checks: what stops this instance, and the cache and limiter as found."""

    faults: tuple[str, ...]
    cache_fault: str | None
    limiter: str


_checked: tuple[float, Readiness] | None = None
_checked_lock = threading.Lock()


def _check() -> Readiness:
    cache_fault = _cache_fault()
    limiter = limiter_state(counters_reachable=cache_fault is None)
    database_fault = _database_probe.fault(deadline_seconds=DATABASE_DEADLINE_SECONDS)
    faults = [fault for fault in (database_fault,) if fault]
    if cache_fault and settings.FIB_RATE_LIMIT_FAIL_CLOSED:
        faults.append(cache_fault)
    return Readiness(faults=tuple(faults), cache_fault=cache_fault, limiter=limiter)


def readiness() -> Readiness:
    """The latest checks, run again when older than READINESS_INTERVAL_SECONDS."""
    global _checked
    with _checked_lock:
        now = time.monotonic()
        if _checked is None or now - _checked[0] >= READINESS_INTERVAL_SECONDS:
            _checked = (now, _check())
        return _checked[1]


def forget_readiness() -> None:
    """Drop the kept answer and the probe's connection (tests change what is checked)."""
    global _checked
    with _checked_lock:
        _checked = None
    _database_probe.close_connection()


def _is_operator(request: HttpRequest) -> bool:
    """A client on this host, or one of our proxies and load balancers asking itself."""
    address = client_ip(request)
    parsed = addresses.parse(address)
    if parsed is None:
        return False
    return parsed.is_loopback or is_trusted_address(address)


@require_safe
def readyz(request: HttpRequest) -> HttpResponse:
    """200 when this instance can serve; 503 problem details naming what stops it.

    The database must answer. The cache holds only the rate-limit counters: when
    it is down and the limiter fails open (the default) the API still serves, so
    the instance stays ready and the body reports the outage; failing closed, it
    is not ready. Taking every instance out of a load balancer because the
    shared Redis is down would defeat failing open.
    """
    state = readiness()
    operator = _is_operator(request)
    if state.faults:
        # What is down (the limiter's state above all) is for operators only.
        detail = (
            "Not ready: " + "; ".join([*state.faults, f"rate limiter {state.limiter}"]) + "."
            if operator
            else "Not ready."
        )
        return problem_response(status=503, detail=detail, headers={"Retry-After": "5"})
    if not operator:
        return HttpResponse(
            _OK, content_type="application/json", headers={"Cache-Control": "no-store"}
        )
    # Records waiting for the database, dropped and spooled: visible before they are lost.
    body: dict[str, object] = {
        "status": "ok",
        "cache": state.cache_fault or "ok",
        "rate_limiter": state.limiter,
        "request_log": request_log.stats(),
    }
    return JsonResponse(body, headers={"Cache-Control": "no-store"})
