"""A newcomer's checkout: manage.py works with nothing set, as Django users expect."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_createsuperuser_works_without_any_configuration(tmp_path):
    database = tmp_path / "newcomer.sqlite3"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "FIB_", "DATABASE_URL", "REDIS_URL"))
    }
    env.update(
        DATABASE_URL=f"sqlite:///{database}",
        DJANGO_SUPERUSER_USERNAME="newcomer",
        DJANGO_SUPERUSER_EMAIL="newcomer@example.com",
        DJANGO_SUPERUSER_PASSWORD="a long enough password",
    )
    assert _manage("migrate", "--no-input", env=env).returncode == 0
    created = _manage("createsuperuser", "--no-input", env=env)
    assert created.returncode == 0, created.stderr
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT username, is_superuser FROM auth_user").fetchall()
    assert rows == [("newcomer", 1)]


def test_the_server_entry_point_still_requires_production_settings():
    # Only the command line defaults to development: gunicorn's entry point does not.
    env = {key: value for key, value in os.environ.items() if not key.startswith("DJANGO_")}
    result = subprocess.run(
        [sys.executable, "-c", "import fibproject.wsgi"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr
