"""Shared fixtures: an independent Fibonacci reference and access to real services.

Outside CI a test whose service is missing is skipped with the reason; in CI
(CI=true) it fails, so a broken machine can never pass for a green run.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"

TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")


# F(0), F(1), ... computed so far by reference_fibonacci, shared by every test module.
_REFERENCE = [0, 1, 1]


def reference_fibonacci(count: int) -> list[int]:
    """F(0) .. F(count - 1): the independent computation tests compare to.

    By the doubling identities F(2k) = F(k)(2F(k+1) - F(k)) and
    F(2k+1) = F(k)^2 + F(k+1)^2, each term from two terms of half its index:
    not the addition loop that builds the service's table, and not its
    bit-by-bit fast doubling either.
    """
    for m in range(len(_REFERENCE), count):
        k = m // 2
        low, high = _REFERENCE[k], _REFERENCE[k + 1]
        _REFERENCE.append(low * (2 * high - low) if m % 2 == 0 else low * low + high * high)
    return _REFERENCE[:count]


def _unreachable(name: str, url: str, *, default_port: int | None = None) -> str | None:
    """Why nothing accepts connections at url's host and port, or None when something does."""
    parts = urlsplit(url)
    address = (parts.hostname, parts.port or default_port)
    try:
        with socket.create_connection(address, timeout=1):
            return None
    except OSError as exc:
        return f"{name} is not reachable at {address[0]}:{address[1]} ({exc})"


def require_service(name: str, url: str) -> None:
    """Skip (or, in CI, fail) unless something accepts connections at url's host and port."""
    message = _unreachable(name, url)
    if message is None:
        return
    if IN_CI:
        pytest.fail(f"{message}; CI requires it")
    pytest.skip(message)


def require_program(name: str) -> str:
    """The path of an installed program; skip (or, in CI, fail) when it is missing."""
    # Debian installs nginx in /usr/sbin, which is not on every user's PATH.
    found = shutil.which(name) or shutil.which(name, path="/usr/local/sbin:/usr/sbin:/sbin")
    if found:
        return found
    message = f"{name} is not installed"
    if IN_CI:
        pytest.fail(f"{message}; CI requires it (.ci/run installs it)")
    pytest.skip(message)


def require_file(path: Path, what: str) -> Path:
    """An installed file; skip (or, in CI, fail) when it is missing."""
    if path.exists():
        return path
    message = f"{what} is not installed ({path})"
    if IN_CI:
        pytest.fail(f"{message}; CI requires it (.ci/run installs it)")
    pytest.skip(message)


# pytest-django's ways into the test database; a fixture that needs it (admin_client,
# live_server) depends on one of these, so it is in the test's fixture closure.
_DATABASE_FIXTURES = frozenset(
    {
        "_django_db_helper",
        "db",
        "transactional_db",
        "django_db_reset_sequences",
        "django_db_serialized_rollback",
        "live_server",
    }
)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects, so `-m database` sees the mark
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark `database` every test that can reach the test database, for the PostgreSQL pass.

    pytest-django refuses database access to any other test, so the mark is complete
    for work done in-process; a test whose server process uses DATABASE_URL marks itself.
    Tests marked `postgresql_only` are deselected (not skipped) in the SQLite pass.
    """
    on_postgresql = os.environ.get("DATABASE_URL", "").startswith("postgres")
    kept, deselected = [], []
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if item.get_closest_marker("django_db") or not _DATABASE_FIXTURES.isdisjoint(fixtures):
            item.add_marker(pytest.mark.database)
        if item.get_closest_marker("postgresql_only") and not on_postgresql:
            deselected.append(item)
        else:
            kept.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


def pytest_sessionstart(session: pytest.Session) -> None:
    """Stop early, with the reason, when the configured PostgreSQL is not there."""
    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url.startswith("postgres"):
        return
    message = _unreachable("PostgreSQL", database_url, default_port=5432)
    if message is None:
        return
    if IN_CI:
        pytest.exit(f"{message}; CI requires it", returncode=1)
    pytest.exit(f"{message}; skipping the PostgreSQL pass", returncode=0)


def redis_caches(url: str, *, key_prefix: str = "test") -> dict:
    """CACHES for both aliases on the Redis at url, with short timeouts."""
    options = {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.5}
    return {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": url,
            "KEY_PREFIX": key_prefix,
            "OPTIONS": options,
        },
        "ratelimit": {
            "BACKEND": "fibonacci.ratelimit.redis_counters.RateLimitCounterCache",
            "LOCATION": url,
            "KEY_PREFIX": f"{key_prefix}-rl",
            "OPTIONS": options,
        },
    }


@pytest.fixture
def redis_url() -> str:
    """The URL of the real Redis the tests may use (its own database number)."""
    require_service("Redis", TEST_REDIS_URL)
    return TEST_REDIS_URL


@pytest.fixture
def closed_port_url() -> str:
    """A redis:// URL on a loopback port that nothing listens on."""
    from deploy.processes import free_port

    return f"redis://127.0.0.1:{free_port()}/0"


@pytest.fixture(autouse=True)
def _fresh_cache_and_generous_limits(settings):
    """Each test starts with empty counters; only rate-limit tests get real limits."""
    from django.core.cache import caches

    settings.FIB_RATE_LIMIT = "1000000/m"
    settings.FIB_RATE_LIMIT_LARGE = "1000000/m"
    for cache in caches.all(initialized_only=True):
        if cache.__class__.__name__ == "LocMemCache":
            cache.clear()


@pytest.fixture(autouse=True)
def _request_log_ends_with_the_test():
    """Records a test left unflushed go with it, instead of being written at exit."""
    from requestlog import buffer as requestlog

    yield
    requestlog.replace_buffer(None)


@pytest.fixture(autouse=True)
def _fresh_readiness_and_own_spool(settings, tmp_path):
    """Each test probes /readyz afresh and spools request-log records into its own directory."""
    from fibonacci import health

    settings.FIB_LOG_SPOOL_DIR = tmp_path / "request-log-spool"
    health.forget_readiness()
    yield
    health.forget_readiness()
