"""Fixtures for the HTTP contract tests."""

import pytest
from rest_framework.test import APIClient


@pytest.fixture
def client() -> APIClient:
    """DRF's test client; the API needs no authentication."""
    return APIClient()


@pytest.fixture(autouse=True)
def _small_caps_by_default(settings):
    """Keep the per-test table small; tests that need the real caps raise them."""
    settings.FIB_MAX_N = 3_000
    settings.FIB_MAX_INDEX = 30_000
