"""Property-based fuzz of the API: arbitrary query strings never produce a 5xx."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import reference_fibonacci

REFERENCE = reference_fibonacci(3_001)

pytestmark = pytest.mark.django_db

numberish = st.one_of(
    st.integers(min_value=-10, max_value=5_000).map(str),
    st.text(alphabet="0123456789+-. e_x٥５", max_size=8),
    st.text(max_size=12),
)
parameter_values = st.one_of(st.none(), numberish)
formats = st.sampled_from([None, "json", "text", "api", "xml", ""])
styles = st.sampled_from([None, "number", "string", "", "float"])

fuzz_settings = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _query(**params: str | None) -> str:
    return "&".join(f"{name}={quote(value)}" for name, value in params.items() if value is not None)


@fuzz_settings
@given(n=parameter_values, offset=parameter_values, fmt=formats, numbers=styles)
def test_sequence_never_fails_with_5xx(client, n, offset, fmt, numbers):
    response = client.get(
        "/api/v1/fibonacci/?" + _query(n=n, offset=offset, format=fmt, numbers=numbers)
    )
    assert response.status_code < 500
    if response.status_code >= 400:
        assert response["Content-Type"] == "application/problem+json"
    elif fmt in (None, "json"):
        body = response.json()
        start, count = body["offset"], body["n"]
        expected: list[int] | list[str] = REFERENCE[start : start + count]
        if numbers == "string":
            expected = [str(number) for number in expected]
        assert body["sequence"] == expected


@fuzz_settings
@given(index=numberish, fmt=formats)
def test_term_never_fails_with_5xx(client, index, fmt):
    response = client.get(f"/api/v1/fibonacci/{quote(index, safe='')}/?" + _query(format=fmt))
    assert response.status_code < 500
    if response.status_code == 200 and fmt in (None, "json"):
        body = response.json()
        if body["index"] <= 3_000:
            assert body["value"] == REFERENCE[body["index"]]
