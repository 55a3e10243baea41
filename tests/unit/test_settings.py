"""Settings read from the environment: bad values stop the start, with the variable named."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[2]


def _import_settings(**environment: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DJANGO_DEBUG": "true",
        "DJANGO_SETTINGS_MODULE": "fibproject.settings",
        **environment,
    }
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("rate", ["120/m", "100/5m", "7/s", "2/h", "9/2d", "0/m"])
def test_rates_of_every_form_are_accepted(rate):
    assert _import_settings(FIB_RATE_LIMIT=rate).returncode == 0


@pytest.mark.parametrize(
    "rate", ["100/0m", "100/00s", "abc", "-1/m", "100/m/2", "100/5", "1.5/m", ""]
)
def test_malformed_rates_stop_the_start_naming_the_variable(rate):
    result = _import_settings(FIB_RATE_LIMIT_LARGE=rate)
    assert result.returncode != 0
    assert "FIB_RATE_LIMIT_LARGE must look like" in result.stderr
