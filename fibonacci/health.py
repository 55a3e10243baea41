"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

import logging
import uuid

from django.conf import settings
from django.core.cache import caches
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_safe

from requestlog import buffer as request_log

from .api.errors import problem_response
from .ratelimit.budgets import limiter_state

logger = logging.getLogger(__name__)

_OK = b'{"status":"ok"}'


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


@require_safe
def readyz(request: HttpRequest) -> HttpResponse:
    """200 when this instance can serve; 503 problem details naming what stops it.

    The database must answer. The cache holds only the rate-limit counters: when
    it is down and the limiter fails open (the default) the API still serves, so
    the instance stays ready and the body reports the outage; failing closed, it
    is not ready. Taking every instance out of a load balancer because the
    shared Redis is down would defeat failing open.
    """
    limiter = limiter_state()
    cache_fault = _cache_fault()
    faults = [fault for fault in (_database_fault(),) if fault]
    if cache_fault and settings.FIB_RATE_LIMIT_FAIL_CLOSED:
        faults.append(cache_fault)
    if faults:
        return problem_response(
            status=503,
            detail="Not ready: " + "; ".join([*faults, f"rate limiter {limiter}"]) + ".",
            headers={"Retry-After": "5"},
        )
    # Records waiting for the database, and dropped: visible before they are lost.
    body: dict[str, object] = {
        "status": "ok",
        "cache": cache_fault or "ok",
        "rate_limiter": limiter,
        "request_log": request_log.stats(),
    }
    return JsonResponse(body, headers={"Cache-Control": "no-store"})
