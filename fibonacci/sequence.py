"""The service layer: the Fibonacci arithmetic and the sequence, serialized once per process.

Nothing here knows about HTTP or Django: the API validates input
(fibonacci.params) and asks for a window of the sequence or a single term;
these functions answer with bytes that renderers only need to wrap.
"""

from __future__ import annotations

import functools
from array import array
from dataclasses import dataclass
from enum import StrEnum

# CPython (3.11+) refuses str(int) past 4300 digits to stop parsing DoS; we keep
# that guard on for user input and split big values into safe chunks instead.
_SAFE_BITS = 13_000  # about 3,900 decimal digits, under the 4,300 default


class NumberStyle(StrEnum):
    """How numbers appear in JSON: as numbers, or as exact decimal strings."""

    NUMBER = "number"
    STRING = "string"


def fibonacci(index: int) -> int:
    """F(index) by fast doubling: O(log index) big-integer multiplications."""
    if index < 0:
        raise ValueError("index must be non-negative")
    current, following = 0, 1  # F(k), F(k + 1) for k = the bits read so far
    for bit in bin(index)[2:]:
        doubled = current * (2 * following - current)  # F(2k)
        doubled_next = current * current + following * following  # F(2k + 1)
        if bit == "1":
            current, following = doubled_next, doubled + doubled_next
        else:
            current, following = doubled, doubled_next
    return current


@functools.cache
def _power_of_ten(exponent: int) -> int:
    power: int = 10**exponent
    return power


def to_decimal(value: int) -> str:
    """Decimal digits of a non-negative int of any size.

    Splits values too long for str() into halves by a power of ten, so the
    interpreter's digit limit never has to be lifted process-wide.
    """
    if value.bit_length() <= _SAFE_BITS:
        return str(value)
    # log10(2) ~ 0.30103: split near the middle of the decimal expansion.
    half_digits = int(value.bit_length() * 0.30103) // 2
    high, low = divmod(value, _power_of_ten(half_digits))
    return to_decimal(high) + to_decimal(low).zfill(half_digits)


# The serialized sequence is kept in blocks of this size. A window spanning
# several blocks is answered with the blocks themselves (shared, not copied)
# and copies of its two ends; renderers join a window of a block's size or less.
BLOCK_BYTES = 256 * 1024


class SerializedSequence:
    """F(0) .. F(size - 1) joined by a separator, kept in blocks, with item offsets.

    A window of consecutive items is then a run of bytes across the blocks: a
    10 MB window costs two partial-block copies, not a 10 MB one.
    """

    __slots__ = ("_blocks", "_block_bytes", "_starts", "_separator_bytes", "_total_bytes")

    def __init__(
        self, *, items: list[bytes], separator: bytes, block_bytes: int = BLOCK_BYTES
    ) -> None:
        joined = separator.join(items)
        self._total_bytes = len(joined)
        self._block_bytes = block_bytes
        self._blocks = tuple(
            joined[start : start + block_bytes] for start in range(0, len(joined), block_bytes)
        )
        self._separator_bytes = len(separator)
        starts = array("Q", [0])
        position = 0
        for item in items:
            position += len(item) + self._separator_bytes
            starts.append(position)
        self._starts = starts

    @property
    def buffer_bytes(self) -> int:
        """Size of the serialized sequence."""
        return self._total_bytes

    def window_bytes(self, *, offset: int, count: int) -> int:
        """Size of the window offset .. offset + count - 1, without building it."""
        if count == 0:
            return 0
        return self._starts[offset + count] - self._starts[offset] - self._separator_bytes

    def window_pieces(self, *, offset: int, count: int) -> list[bytes]:
        """Items offset .. offset + count - 1, joined by the separator, as consecutive pieces.

        One piece per block the window touches: the whole blocks in between are
        the table's own objects, and only the two ends are copies.
        """
        if count == 0:
            return []
        start = self._starts[offset]
        end = self._starts[offset + count] - self._separator_bytes
        size = self._block_bytes
        first, last = start // size, (end - 1) // size
        if first == last:
            return [self._blocks[first][start - first * size : end - first * size]]
        pieces = [self._blocks[first][start - first * size :]]
        pieces.extend(self._blocks[first + 1 : last])
        pieces.append(self._blocks[last][: end - last * size])
        return pieces

    def window(self, *, offset: int, count: int) -> bytes:
        """Items offset .. offset + count - 1, joined by the separator, in one bytes object."""
        return b"".join(self.window_pieces(offset=offset, count=count))


class SequenceTable:
    """The first `size` Fibonacci numbers, serialized for every output form.

    Built once per process (about 0.3 s for size 10,000). Memory: each of the
    three forms holds every digit once, so about 3 x the total digit count,
    which for size 10,000 is 3 x 10.4 MB (in 256 KB blocks), plus 80 KB of
    offsets per form.
    Under gunicorn's preload_app the forked workers share these pages.
    """

    __slots__ = ("size", "numbers", "strings", "text")

    def __init__(self, size: int) -> None:
        digits: list[bytes] = []
        current, following = 0, 1
        for _ in range(size):
            digits.append(to_decimal(current).encode("ascii"))
            current, following = following, current + following
        self.size = size
        self.numbers = SerializedSequence(items=digits, separator=b",")
        self.strings = SerializedSequence(
            items=[b'"' + item + b'"' for item in digits], separator=b","
        )
        self.text = SerializedSequence(items=digits, separator=b" ")

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the three serialized buffers."""
        return sum(form.buffer_bytes for form in (self.numbers, self.strings, self.text))

    def digits(self, index: int) -> bytes:
        """The decimal digits of F(index), for index < size."""
        return self.text.window(offset=index, count=1)


@functools.lru_cache(maxsize=2)
def sequence_table(size: int) -> SequenceTable:
    """The table for `size` terms, built on first use and kept for the process."""
    return SequenceTable(size)


@dataclass(frozen=True, slots=True)
class SequenceSlice:
    """F(offset) .. F(offset + count - 1), already serialized for each format."""

    offset: int
    count: int
    style: NumberStyle
    table: SequenceTable

    def json_items(self) -> list[bytes]:
        """The comma-separated JSON array items (numbers or strings), in pieces."""
        form = self.table.strings if self.style is NumberStyle.STRING else self.table.numbers
        return form.window_pieces(offset=self.offset, count=self.count)

    def text_items(self) -> list[bytes]:
        """The space-separated decimal numbers, in pieces."""
        return self.table.text.window_pieces(offset=self.offset, count=self.count)

    @property
    def cache_key(self) -> str:
        """Identifies the representation: equal keys mean byte-identical bodies."""
        return f"seq.{self.offset}.{self.count}.{self.style}"


@dataclass(frozen=True, slots=True)
class Term:
    """F(index), with its decimal digits."""

    index: int
    digits: bytes
    style: NumberStyle

    def json_value(self) -> bytes:
        """The JSON value: a number, or a string of the same digits."""
        return b'"' + self.digits + b'"' if self.style is NumberStyle.STRING else self.digits

    @property
    def cache_key(self) -> str:
        """Identifies the representation: equal keys mean byte-identical bodies."""
        return f"term.{self.index}.{self.style}"


def sequence_window(
    *, offset: int, count: int, table_size: int, style: NumberStyle = NumberStyle.NUMBER
) -> SequenceSlice:
    """F(offset) .. F(offset + count - 1) from the table of `table_size` terms."""
    if offset < 0 or count < 0 or offset + count > table_size:
        raise ValueError("window outside the table")
    return SequenceSlice(offset=offset, count=count, style=style, table=sequence_table(table_size))


@functools.lru_cache(maxsize=256)
def _term_digits(index: int) -> bytes:
    # Bounded cache: the largest default term (F(100000)) is 21 KB of digits.
    return to_decimal(fibonacci(index)).encode("ascii")


def term(*, index: int, table_size: int, style: NumberStyle = NumberStyle.NUMBER) -> Term:
    """F(index): from the prepared table when it holds it, computed otherwise."""
    in_table = index < table_size
    digits = sequence_table(table_size).digits(index) if in_table else _term_digits(index)
    return Term(index=index, digits=digits, style=style)
