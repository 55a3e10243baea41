"""The admin's login is throttled: failed logins per address and per username, refused unhashed."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.hashers import MD5PasswordHasher
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponse
from django.test import Client

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/"
PASSWORD = "the-right-password"


class CountingHasher(MD5PasswordHasher):
    """A fast hasher that counts every hash it computes (set or checked)."""

    algorithm = "counting_md5"
    calls = 0

    def encode(self, password: str, salt: str) -> str:
        """Count, then hash as MD5 does."""
        CountingHasher.calls += 1
        return super().encode(password, salt)


@pytest.fixture
def hasher(settings):
    """Passwords hashed by CountingHasher, its count reset."""
    settings.PASSWORD_HASHERS = [f"{__name__}.CountingHasher"]
    CountingHasher.calls = 0
    return CountingHasher


@pytest.fixture
def limits(settings):
    """The documented defaults, stated here so the test says what it relies on."""
    settings.FIB_ADMIN_LOGIN_RATE = "5/m"
    settings.FIB_ADMIN_LOGIN_USERNAME_RATE = "10/h"


@pytest.fixture
def admin_user(hasher):
    """A superuser whose password is PASSWORD."""
    return User.objects.create_superuser("root", password=PASSWORD)


def _client(address: str) -> Client:
    return Client(REMOTE_ADDR=address)


def _login(client: Client, *, username: str = "root", password: str) -> Any:
    return client.post(LOGIN, {"username": username, "password": password, "next": "/admin/"})


def _logged_in(response: HttpResponse) -> bool:
    return response.status_code == 302 and response["Location"] == "/admin/"


def test_sixth_wrong_password_from_one_address_is_refused_without_hashing(
    limits, admin_user, hasher
):
    client = _client("198.51.100.7")
    for attempt in range(5):
        response = _login(client, password=f"wrong-{attempt}")
        assert response.status_code == 200, attempt
        assert b"Please enter the correct username and password" in response.content
    hashes_before = hasher.calls

    refused = _login(client, password="wrong-6")
    right_password_too = _login(client, password=PASSWORD)

    assert hasher.calls == hashes_before
    for response in (refused, right_password_too):
        assert response.status_code == 429
        assert response["Content-Type"].startswith("text/html")
        assert "no-store" in response["Cache-Control"]
        retry_after = int(response["Retry-After"])
        assert 1 <= retry_after <= 60
        text = response.content.decode()
        assert "Too many failed logins from your address" in text
        assert re.search(r"Try again in \d+ seconds", text)
        # Still the admin's login page, with its form, to try again later.
        assert 'id="login-form"' in text
    assert "_auth_user_id" not in right_password_too.client.session


def test_another_address_still_logs_in(limits, admin_user):
    for attempt in range(6):
        _login(_client("198.51.100.7"), password=f"wrong-{attempt}")

    assert _logged_in(_login(_client("198.51.100.8"), password=PASSWORD))


def test_username_budget_is_counted_across_addresses(limits, admin_user, hasher):
    for attempt in range(10):
        response = _login(_client(f"198.51.100.{attempt + 1}"), password=f"wrong-{attempt}")
        assert response.status_code == 200, attempt
    hashes_before = hasher.calls

    # A fresh address, and the username spelled differently: the same budget.
    refused = _login(_client("203.0.113.9"), username=" ROOT", password=PASSWORD)

    assert refused.status_code == 429
    assert hasher.calls == hashes_before
    assert "Too many failed logins for this username" in refused.content.decode()
    # Within the username's hour-long window (django-ratelimit staggers where
    # each key's window starts, so how much of it is left varies by key).
    assert 0 < int(refused["Retry-After"]) <= 3_600
    # Another username from that address is not refused.
    User.objects.create_superuser("other", password=PASSWORD)
    assert _logged_in(_login(_client("203.0.113.9"), username="other", password=PASSWORD))


def test_ipv6_addresses_of_one_slash_64_share_a_budget(limits, admin_user):
    for attempt in range(5):
        _login(_client(f"2001:db8:1:2::{attempt + 1}"), password=f"wrong-{attempt}")

    assert _login(_client("2001:db8:1:2::99"), password=PASSWORD).status_code == 429
    assert _logged_in(_login(_client("2001:db8:1:3::1"), password=PASSWORD))


def test_successful_logins_spend_no_budget(settings, admin_user):
    settings.FIB_ADMIN_LOGIN_RATE = "2/m"
    for _ in range(4):
        assert _logged_in(_login(_client("198.51.100.7"), password=PASSWORD))


def test_unknown_usernames_are_counted_too(limits, admin_user, hasher):
    client = _client("198.51.100.7")
    for attempt in range(5):
        _login(client, username=f"nobody-{attempt}", password="guess")
    hashes_before = hasher.calls

    assert _login(client, username="nobody-6", password="guess").status_code == 429
    assert hasher.calls == hashes_before


def test_a_staff_only_page_refuses_non_staff_and_counts_it(settings, admin_user):
    settings.FIB_ADMIN_LOGIN_RATE = "1/m"
    User.objects.create_user("visitor", password=PASSWORD)  # right password, not staff
    client = _client("198.51.100.7")

    assert _login(client, username="visitor", password=PASSWORD).status_code == 200
    assert _login(client, password=PASSWORD).status_code == 429


def test_a_zero_rate_closes_the_login(settings, admin_user):
    settings.FIB_ADMIN_LOGIN_RATE = "0/m"

    response = _login(_client("198.51.100.7"), password=PASSWORD)

    assert response.status_code == 429


@pytest.mark.parametrize("variable", ["FIB_ADMIN_LOGIN_RATE", "FIB_ADMIN_LOGIN_USERNAME_RATE"])
def test_the_rates_are_read_from_the_environment(monkeypatch, variable):
    from tests.unit.test_settings import run_settings

    started = run_settings(monkeypatch, DJANGO_DEBUG="true", **{variable: "3/5m"})
    assert started[variable] == "3/5m"
    with pytest.raises(ImproperlyConfigured, match=f"^{variable} must look like"):
        run_settings(monkeypatch, DJANGO_DEBUG="true", **{variable: "5 per minute"})


def test_unreachable_counters_let_operators_in(settings, admin_user, closed_port_url, caplog):
    from tests.conftest import redis_caches

    settings.CACHES = redis_caches(closed_port_url)
    settings.FIB_ADMIN_LOGIN_RATE = "1/m"
    client = _client("198.51.100.7")

    _login(client, password="wrong")
    assert _logged_in(_login(client, password=PASSWORD))
    assert any("admin login counters unavailable" in m for m in caplog.messages)


def test_counted_in_the_shared_redis(settings, admin_user, redis_url, hasher):
    """With the Redis counter backend (its add is not a general add), failures count and refuse."""
    import redis

    from tests.conftest import redis_caches

    prefix = "admin-login-test"
    settings.CACHES = redis_caches(redis_url, key_prefix=prefix)
    settings.FIB_ADMIN_LOGIN_RATE = "3/m"
    try:
        for attempt in range(3):
            assert _login(_client("198.51.100.7"), password=f"w{attempt}").status_code == 200
        hashes_before = hasher.calls
        assert _login(_client("198.51.100.7"), password=PASSWORD).status_code == 429
        assert hasher.calls == hashes_before
        assert list(redis.Redis.from_url(redis_url).scan_iter(match=f"{prefix}-rl:*"))
    finally:
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
        client.close()
