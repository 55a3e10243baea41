"""The service layer against an independent computation and Fibonacci identities."""

from __future__ import annotations

import json
import random
import sys
from contextlib import contextmanager

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fibonacci import sequence as services
from fibonacci.sequence import (
    NumberStyle,
    SerializedSequence,
    fibonacci,
    sequence_window,
    term,
    to_decimal,
)
from tests.conftest import reference_fibonacci

REFERENCE = reference_fibonacci(25_001)  # F(25000) has 5,225 digits: past the str() limit


@contextmanager
def unlimited_int_digits():
    """Lift the interpreter's digit limit for the test's own independent checks only."""
    previous = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        yield
    finally:
        sys.set_int_max_str_digits(previous)


def test_fast_doubling_matches_the_reference():
    for index in [*range(200), 1_000, 4_300, 20_577, 20_578, 25_000]:
        assert fibonacci(index) == REFERENCE[index]


def test_negative_index_is_refused():
    with pytest.raises(ValueError):
        fibonacci(-1)


@pytest.mark.parametrize("index", random.Random(7).sample(range(1, 100_001), 25))
def test_cassini_identity(index):
    assert fibonacci(index - 1) * fibonacci(index + 1) - fibonacci(index) ** 2 == (-1) ** index


@pytest.mark.parametrize("k", [1, 2, 10, 999, 5_000, 50_000])
def test_doubling_identities(k):
    f_k, f_k1 = fibonacci(k), fibonacci(k + 1)
    assert fibonacci(2 * k) == f_k * (2 * f_k1 - f_k)
    assert fibonacci(2 * k + 1) == f_k1 * f_k1 + f_k * f_k


def test_to_decimal_handles_values_past_the_interpreter_limit():
    value = REFERENCE[25_000]
    with pytest.raises(ValueError):
        str(value)  # the guard stays on for everyone else
    digits = to_decimal(value)
    with unlimited_int_digits():
        assert digits == str(value)
    assert len(digits) == 5_225


@pytest.mark.parametrize(
    "value",
    [0, 7, 10**3999, 10**4300, 10**9000 - 1, 10**9000 + 1],
    ids=["0", "7", "1e3999", "1e4300", "1e9000-1", "1e9000+1"],
)
def test_to_decimal_keeps_zeros_at_split_points(value):
    with unlimited_int_digits():
        assert to_decimal(value) == str(value)


def test_window_numbers_equal_the_reference():
    window = sequence_window(offset=0, count=2_000, table_size=3_000)
    assert json.loads(b"[" + b"".join(window.json_items()) + b"]") == REFERENCE[:2_000]


@pytest.mark.parametrize(("offset", "count"), [(0, 0), (0, 1), (3, 5), (2_990, 10), (1_234, 1)])
def test_window_forms_agree_with_the_reference(offset, count):
    expected = REFERENCE[offset : offset + count]
    numbers = sequence_window(offset=offset, count=count, table_size=3_000)
    strings = sequence_window(
        offset=offset, count=count, table_size=3_000, style=NumberStyle.STRING
    )
    assert json.loads(b"[" + b"".join(numbers.json_items()) + b"]") == expected
    assert json.loads(b"[" + b"".join(strings.json_items()) + b"]") == [str(n) for n in expected]
    assert [int(n) for n in b"".join(numbers.text_items()).split()] == expected


def test_the_whole_default_table_equals_the_reference_in_every_form():
    table = services.sequence_table(10_000)
    expected = REFERENCE[:10_000]
    with unlimited_int_digits():
        assert [int(n) for n in table.numbers.window(offset=0, count=10_000).split(b",")] == (
            expected
        )
        assert [int(n) for n in table.text.window(offset=0, count=10_000).split()] == expected
        strings = table.strings.window(offset=0, count=10_000).split(b",")
        assert [int(n.strip(b'"')) for n in strings] == expected


def test_window_outside_the_table_is_refused():
    with pytest.raises(ValueError):
        sequence_window(offset=2_999, count=2, table_size=3_000)


@pytest.mark.parametrize("index", [0, 1, 2, 10, 2_999, 3_000, 20_578, 25_000])
def test_term_inside_and_beyond_the_table(index):
    result = term(index=index, table_size=3_000)
    with unlimited_int_digits():
        assert int(result.digits) == REFERENCE[index]
    assert term(index=index, table_size=3_000, style=NumberStyle.STRING).json_value() == (
        b'"' + result.digits + b'"'
    )


def test_table_memory_is_three_copies_of_the_digits():
    table = services.SequenceTable(1_000)
    digit_count = sum(len(str(n)) for n in REFERENCE[:1_000])
    separators = 999
    quotes = 2 * 1_000
    assert table.memory_bytes == 3 * (digit_count + separators) + quotes


ITEMS = [str(number).encode() for number in REFERENCE[:400]]


@given(
    block_bytes=st.integers(min_value=1, max_value=5_000),
    offset=st.integers(min_value=0, max_value=len(ITEMS)),
    count=st.integers(min_value=0, max_value=len(ITEMS)),
)
def test_window_pieces_join_to_the_window_for_any_block_size(block_bytes, offset, count):
    count = min(count, len(ITEMS) - offset)
    sequence = SerializedSequence(items=ITEMS, separator=b",", block_bytes=block_bytes)
    pieces = sequence.window_pieces(offset=offset, count=count)
    expected = b",".join(ITEMS[offset : offset + count])
    assert b"".join(pieces) == expected
    assert sequence.window_bytes(offset=offset, count=count) == len(expected)
    assert len(pieces) <= len(expected) // block_bytes + 2  # one per block touched
    assert all(pieces)  # no empty writes


def test_a_large_window_shares_the_table_blocks_instead_of_copying_them():
    sequence = SerializedSequence(items=ITEMS, separator=b",", block_bytes=1_000)
    pieces = sequence.window_pieces(offset=100, count=250)
    table_blocks = sequence.window_pieces(offset=0, count=len(ITEMS))
    shared = [piece for piece in pieces if any(piece is block for block in table_blocks)]
    assert len(pieces) > 3
    assert shared == pieces[1:-1]  # every inner piece is a block of the table itself
    assert len(pieces[0]) <= 1_000 and len(pieces[-1]) <= 1_000  # only the ends are copies
