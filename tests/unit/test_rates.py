"""The one reader of a rate: what settings accept is what the budgets count with."""

from __future__ import annotations

import pytest

from fibonacci.ratelimit.rates import Rate, parse_rate


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("120/m", Rate(count=120, window_seconds=60)),
        ("100/5m", Rate(count=100, window_seconds=300)),
        ("7/s", Rate(count=7, window_seconds=1)),
        ("2/h", Rate(count=2, window_seconds=3_600)),
        ("9/2d", Rate(count=9, window_seconds=172_800)),
        ("0/m", Rate(count=0, window_seconds=60)),
    ],
)
def test_every_form(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize(
    "text", ["100/0m", "100/00s", "abc", "-1/m", "100/m/2", "100/5", "1.5/m", ""]
)
def test_malformed_rates_are_refused(text):
    with pytest.raises(ValueError, match="120/m"):
        parse_rate(text)
