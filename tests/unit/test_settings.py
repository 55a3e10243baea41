"""Settings read from the environment: bad values stop the start, with the variable named.

The readers of fibproject/env.py are called directly; fibproject/settings.py
itself is executed in this process (runpy, a fresh namespace each time, so the
settings Django already loaded are untouched) under a monkeypatched environment,
as a server would import it at start-up.
"""

from __future__ import annotations

import os
import runpy
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from fibproject.env import env_bool, env_int, env_list, env_rate, env_str

SETTINGS_FILE = Path(__file__).resolve().parents[2] / "fibproject" / "settings.py"

# What a production start must set; the cases below take one of them away.
PRODUCTION = {
    "DJANGO_DEBUG": "false",
    "DJANGO_SECRET_KEY": "settings-test-secret-key",
    "DJANGO_ALLOWED_HOSTS": "api.example.com",
}


def run_settings(monkeypatch: pytest.MonkeyPatch, **environment: str) -> dict[str, Any]:
    """The names fibproject/settings.py defines when started with only `environment` of ours."""
    # The suite's own settings and the caller's shell set some of these; each case starts bare.
    for name in list(os.environ):
        ours = name.startswith(("DJANGO_", "FIB_")) or name in {"DATABASE_URL", "REDIS_URL"}
        if ours and name != "DJANGO_SETTINGS_MODULE":
            monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(SETTINGS_FILE), run_name="settings_under_test")


# --- The settings module's start-up rules -----------------------------------------


@pytest.mark.parametrize("rate", ["120/m", "100/5m", "7/s", "2/h", "9/2d", "0/m"])
def test_rates_of_every_form_are_accepted(monkeypatch, rate):
    settings = run_settings(monkeypatch, DJANGO_DEBUG="true", FIB_RATE_LIMIT=rate)
    assert settings["FIB_RATE_LIMIT"] == rate


@pytest.mark.parametrize(
    "rate", ["100/0m", "100/00s", "abc", "-1/m", "100/m/2", "100/5", "1.5/m", ""]
)
def test_malformed_rates_stop_the_start_naming_the_variable(monkeypatch, rate):
    with pytest.raises(ImproperlyConfigured, match="FIB_RATE_LIMIT_LARGE must look like"):
        run_settings(monkeypatch, DJANGO_DEBUG="true", FIB_RATE_LIMIT_LARGE=rate)


def test_the_production_environment_starts(monkeypatch):
    settings = run_settings(monkeypatch, **PRODUCTION)
    assert settings["DEBUG"] is False
    assert settings["SECRET_KEY"] == "settings-test-secret-key"
    assert settings["ALLOWED_HOSTS"] == ["api.example.com"]


@pytest.mark.parametrize("secret_key", [None, "", "   "])
def test_a_missing_secret_key_without_debug_stops_the_start(monkeypatch, secret_key):
    environment = {**PRODUCTION}
    del environment["DJANGO_SECRET_KEY"]
    if secret_key is not None:
        environment["DJANGO_SECRET_KEY"] = secret_key
    with pytest.raises(ImproperlyConfigured, match=r"^Set DJANGO_SECRET_KEY .* DJANGO_DEBUG=true"):
        run_settings(monkeypatch, **environment)


def test_debug_without_a_secret_key_uses_a_development_key(monkeypatch):
    settings = run_settings(monkeypatch, DJANGO_DEBUG="true")
    assert settings["SECRET_KEY"].startswith("django-insecure-")
    assert settings["ALLOWED_HOSTS"] == ["localhost", "127.0.0.1", "[::1]"]


@pytest.mark.parametrize("hosts", [None, "", " , ,"])
def test_no_allowed_hosts_without_debug_stops_the_start(monkeypatch, hosts):
    environment = {**PRODUCTION}
    del environment["DJANGO_ALLOWED_HOSTS"]
    if hosts is not None:
        environment["DJANGO_ALLOWED_HOSTS"] = hosts
    with pytest.raises(ImproperlyConfigured, match="^Set DJANGO_ALLOWED_HOSTS"):
        run_settings(monkeypatch, **environment)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DJANGO_DEBUG", "maybe", "DJANGO_DEBUG must be true or false, not 'maybe'"),
        ("FIB_MAX_N", "-5", "FIB_MAX_N must be an integer >= 0, not '-5'"),
        ("FIB_LOG_BUFFER_SIZE", "0", "FIB_LOG_BUFFER_SIZE must be an integer >= 1, not '0'"),
        ("FIB_ADMIN_LOGIN_RATE", "5/minute", "FIB_ADMIN_LOGIN_RATE must look like 120/m"),
        ("FIB_TRUSTED_PROXIES", "10.0.0.0/33", "FIB_TRUSTED_PROXIES has an invalid entry"),
        ("FIB_TRUSTED_PROXIES", "127.0.0.1,proxy.internal", "FIB_TRUSTED_PROXIES has an invalid"),
    ],
)
def test_other_malformed_values_stop_the_start_naming_the_variable(
    monkeypatch, name, value, message
):
    with pytest.raises(ImproperlyConfigured) as stopped:
        run_settings(monkeypatch, **{**PRODUCTION, name: value})
    assert str(stopped.value).startswith(message)


# --- The readers -------------------------------------------------------------------


def test_env_str_strips_and_a_blank_value_stays_blank(monkeypatch):
    monkeypatch.delenv("FIB_TEST_VALUE", raising=False)
    assert env_str("FIB_TEST_VALUE", "fallback") == "fallback"
    monkeypatch.setenv("FIB_TEST_VALUE", "  spaced out \t")
    assert env_str("FIB_TEST_VALUE", "fallback") == "spaced out"
    monkeypatch.setenv("FIB_TEST_VALUE", "   ")
    assert env_str("FIB_TEST_VALUE", "fallback") == ""


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        *((word, True) for word in ["1", "true", "True", "YES", "on", " on "]),
        *((word, False) for word in ["0", "false", "FALSE", "no", "Off"]),
    ],
)
def test_env_bool_reads_every_spelling(monkeypatch, raw, expected):
    monkeypatch.setenv("FIB_TEST_FLAG", raw)
    assert env_bool("FIB_TEST_FLAG", default=not expected) is expected


@pytest.mark.parametrize("default", [True, False])
@pytest.mark.parametrize("raw", [None, "", "  "])
def test_env_bool_unset_or_blank_is_the_default(monkeypatch, raw, default):
    monkeypatch.delenv("FIB_TEST_FLAG", raising=False)
    if raw is not None:
        monkeypatch.setenv("FIB_TEST_FLAG", raw)
    assert env_bool("FIB_TEST_FLAG", default=default) is default


@pytest.mark.parametrize("raw", ["2", "y", "enabled", "truee"])
def test_env_bool_refuses_anything_else_naming_the_variable(monkeypatch, raw):
    monkeypatch.setenv("FIB_TEST_FLAG", raw)
    with pytest.raises(
        ImproperlyConfigured, match=f"^FIB_TEST_FLAG must be true or false, not '{raw}'$"
    ):
        env_bool("FIB_TEST_FLAG", default=False)


@pytest.mark.parametrize(("raw", "expected"), [("0", 0), ("12", 12), (" 12 ", 12), ("007", 7)])
def test_env_int_reads_decimal_digits(monkeypatch, raw, expected):
    monkeypatch.setenv("FIB_TEST_NUMBER", raw)
    assert env_int("FIB_TEST_NUMBER", default=99) == expected


@pytest.mark.parametrize("raw", [None, "", "   "])
def test_env_int_unset_or_blank_is_the_default(monkeypatch, raw):
    monkeypatch.delenv("FIB_TEST_NUMBER", raising=False)
    if raw is not None:
        monkeypatch.setenv("FIB_TEST_NUMBER", raw)
    assert env_int("FIB_TEST_NUMBER", default=99) == 99


# Signs, separators, spaces inside, non-ASCII digits (int() would take "١٢" and "1_000").
@pytest.mark.parametrize(
    "raw", ["-1", "+1", "1_000", "1 000", "1.0", "1e3", "0x10", "١٢", "twelve"]
)
def test_env_int_refuses_anything_but_ascii_digits_naming_the_variable(monkeypatch, raw):
    monkeypatch.setenv("FIB_TEST_NUMBER", raw)
    with pytest.raises(
        ImproperlyConfigured, match="^FIB_TEST_NUMBER must be an integer >= 0, not "
    ):
        env_int("FIB_TEST_NUMBER", default=99)


def test_env_int_refuses_a_value_below_the_minimum(monkeypatch):
    monkeypatch.setenv("FIB_TEST_NUMBER", "9")
    assert env_int("FIB_TEST_NUMBER", default=99, minimum=9) == 9
    monkeypatch.setenv("FIB_TEST_NUMBER", "8")
    with pytest.raises(
        ImproperlyConfigured, match="^FIB_TEST_NUMBER must be an integer >= 9, not '8'$"
    ):
        env_int("FIB_TEST_NUMBER", default=99, minimum=9)


def test_env_rate_keeps_the_rate_as_written_and_defaults_when_unset(monkeypatch):
    monkeypatch.delenv("FIB_TEST_RATE", raising=False)
    assert env_rate("FIB_TEST_RATE", default="20/m") == "20/m"
    monkeypatch.setenv("FIB_TEST_RATE", " 100/5m ")
    assert env_rate("FIB_TEST_RATE", default="20/m") == "100/5m"


@pytest.mark.parametrize("raw", ["", "100/0m", "100/minute", "1.5/m"])
def test_env_rate_refuses_a_malformed_rate_naming_the_variable(monkeypatch, raw):
    monkeypatch.setenv("FIB_TEST_RATE", raw)
    with pytest.raises(ImproperlyConfigured, match="^FIB_TEST_RATE must look like 120/m or 100/5m"):
        env_rate("FIB_TEST_RATE", default="20/m")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a.example,b.example", ["a.example", "b.example"]),
        (" a.example , b.example ,", ["a.example", "b.example"]),
        (",,", []),
        ("", []),
    ],
)
def test_env_list_splits_on_commas_and_drops_empty_items(monkeypatch, raw, expected):
    monkeypatch.setenv("FIB_TEST_LIST", raw)
    assert env_list("FIB_TEST_LIST", "default.example") == expected


def test_env_list_unset_is_the_default_split(monkeypatch):
    monkeypatch.delenv("FIB_TEST_LIST", raising=False)
    assert env_list("FIB_TEST_LIST", "localhost, 127.0.0.1") == ["localhost", "127.0.0.1"]
