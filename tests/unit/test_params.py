"""The one reader of n, offset and index: which strings are numbers, and the query rules."""

from __future__ import annotations

import pytest
from django.http import QueryDict
from hypothesis import given
from hypothesis import strategies as st

from fibonacci import params


@pytest.mark.parametrize(
    ("raw", "maximum", "value"),
    [
        ("0", 10, 0),
        ("10", 10, 10),
        ("0007", 10, 7),
        ("0" * 5_000 + "3", 10, 3),
        ("11", 10, None),
        ("", 10, None),
        ("-1", 10, None),
        ("+1", 10, None),
        (" 1", 10, None),
        ("1 ", 10, None),
        ("1.0", 10, None),
        ("1e1", 10, None),
        ("0x1", 10, None),
        ("1_0", 10, None),
        ("\u0665", 10, None),  # ARABIC-INDIC DIGIT FIVE: a digit, not ASCII
        ("\u00b2", 10, None),  # SUPERSCRIPT TWO: isdigit() is true for it
        ("9" * 100_000, 10_000, None),
    ],
)
def test_parse_decimal(raw, maximum, value):
    assert params.parse_decimal(raw, maximum=maximum) == value


def _lookup(query: str):
    return QueryDict(query).getlist


@pytest.mark.parametrize(
    ("query", "window"),
    [
        ("n=5", params.Window(offset=0, count=5)),
        ("n=5&offset=3", params.Window(offset=3, count=5)),
        ("n=0", params.Window(offset=0, count=0)),
        ("n=10&offset=0", params.Window(offset=0, count=10)),
        ("n=1&offset=10", None),  # past the table
        ("n=11", None),
        ("", None),  # n is required
        ("offset=3", None),
        ("n=5&n=5", None),  # repeated, even with equal values
        ("n=5&offset=1&offset=2", None),
        ("n=5&offset=", None),  # blank is a value, not an absence
        ("n=", None),
    ],
)
def test_window_rules(query, window):
    assert params.window(_lookup(query), maximum=10) == window


def test_each_number_is_read_on_its_own():
    # The request log records what it can: a valid offset beside an invalid n.
    lookup = _lookup("n=-1&offset=2")
    assert params.n(lookup, maximum=10) is None
    assert params.offset(lookup, maximum=10) == 2
    assert params.offset(_lookup("n=3"), maximum=10) == params.OFFSET_DEFAULT


def test_single_tells_absent_from_repeated():
    assert params.single([]) is None
    assert params.single(["a"]) == "a"
    assert params.single(["a", "b"]) is params.REPEATED


@given(offset=st.integers(0, 50), count=st.integers(0, 50), maximum=st.integers(0, 50))
def test_fits_is_the_table_bound(offset, count, maximum):
    last_index = offset + count - 1
    assert params.fits(offset=offset, count=count, maximum=maximum) == (last_index < maximum)


@pytest.mark.parametrize(("raw", "value"), [("7", 7), ("007", 7), ("8", None), (None, None)])
def test_index(raw, value):
    assert params.index(raw, maximum=7) == value
