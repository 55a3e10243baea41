"""System checks and start-up guards for the service's settings."""

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
