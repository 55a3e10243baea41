"""Test settings: the project's settings with the variables a laptop lacks."""

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "tests-only-secret-key")
os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "testserver,localhost,127.0.0.1")

from fibproject.settings import *  # noqa: E402,F403

# The request log's writer thread would commit outside each test's transaction;
# tests flush by hand (fibonacci.requestlog.flush) or start a writer explicitly.
FIB_LOG_BACKGROUND_WRITER = False
