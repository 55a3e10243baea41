"""System checks and start-up guards for the service's settings."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from fibonacci.ratelimit.budgets import check_shared_counters
from tests.conftest import redis_caches

LOCAL = {
    alias: {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": alias}
    for alias in ("default", "ratelimit")
}
REDIS = redis_caches("redis://127.0.0.1:1/0")


def test_embedded_default_passes_the_system_checks(settings):
    settings.CACHES = LOCAL
    call_command("check", fail_level="WARNING")


def test_deploy_check_warns_about_per_process_counters(settings, capsys):
    settings.CACHES = LOCAL
    call_command("check", deploy=True)
    assert "fibonacci.W001" in capsys.readouterr().err


def test_invalid_trusted_proxy_fails_the_checks(settings):
    settings.FIB_TRUSTED_PROXIES = ["proxy.internal"]
    with pytest.raises(SystemCheckError, match="fibonacci.E001"):
        call_command("check")


@pytest.mark.parametrize(
    ("caches", "workers", "enabled", "refused"),
    [
        (LOCAL, 4, True, True),
        (LOCAL, 1, True, False),
        (LOCAL, 4, False, False),
        (REDIS, 4, True, False),
    ],
)
def test_several_workers_need_shared_counters(settings, caches, workers, enabled, refused):
    settings.CACHES = caches
    settings.FIB_RATE_LIMIT_ENABLED = enabled
    if refused:
        with pytest.raises(ImproperlyConfigured, match="REDIS_URL"):
            check_shared_counters(workers=workers)
    else:
        check_shared_counters(workers=workers)


PRODUCTION_SECURITY = {"DEBUG": False, "SESSION_COOKIE_SECURE": True, "CSRF_COOKIE_SECURE": True}


def _deploy_check_ids(capsys: pytest.CaptureFixture[str]) -> str:
    call_command("check", deploy=True)
    return capsys.readouterr().err


def test_deploy_check_is_quiet_about_csrf_with_the_production_settings(settings, capsys):
    for name, value in PRODUCTION_SECURITY.items():
        setattr(settings, name, value)
    output = _deploy_check_ids(capsys)
    assert "security.W003" not in output
    assert "fibonacci.W002" not in output
    assert "fibonacci.W003" not in output


def test_deploy_check_warns_without_csrf_middleware(settings, capsys):
    for name, value in PRODUCTION_SECURITY.items():
        setattr(settings, name, value)
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if "Csrf" not in m]
    assert "fibonacci.W002" in _deploy_check_ids(capsys)


def test_deploy_check_warns_about_an_insecure_csrf_cookie(settings, capsys):
    for name, value in PRODUCTION_SECURITY.items():
        setattr(settings, name, value)
    settings.CSRF_COOKIE_SECURE = False
    assert "fibonacci.W003" in _deploy_check_ids(capsys)


def test_deploy_check_passes_with_the_documented_production_environment():
    # The variables docs/deployment.md puts in /etc/fibonacci/env (values made up).
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "FIB_", "DATABASE_URL", "REDIS_URL"))
    }
    environment.update(
        DJANGO_SETTINGS_MODULE="fibproject.settings",
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY="k" * 10 + "-production-secret-with-enough-length-and-variety-123",
        DJANGO_ALLOWED_HOSTS="fib.example.com",
        DATABASE_URL="postgres://fibonacci@db.internal:5432/fibonacci",
        REDIS_URL="redis://cache.internal:6379/0",
        FIB_TRUSTED_PROXIES="127.0.0.1",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=Path(__file__).resolve().parents[2],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout
