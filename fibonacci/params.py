"""The one reader of the numbers a request asks for: `n`, `offset` and `index`.

Every caller applies these rules through this module: the query serializer
(which adds the messages), the "large request" rule of the rate limiter and
the request log's writer. The rules:

- a number is plain ASCII decimal digits (leading zeros allowed) for a value
  from 0 to its maximum; its length is checked before `int()` sees it, so a
  huge digit string costs nothing to reject;
- a query parameter is given at most once (a repeated one is invalid, not
  "the last one wins"); `n` must be given, `offset` defaults to 0;
- a window ends within the prepared table: offset + n <= FIB_MAX_N.

No Django imports: a caller passes the lookup of its query (QueryDict.getlist).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

# `offset` when the query does not give one: the sequence from F(0).
OFFSET_DEFAULT: Final = 0


class _Repeated:
    """The value of a query parameter given more than once."""

    def __repr__(self) -> str:
        return "REPEATED"


REPEATED: Final = _Repeated()

# The values of one query parameter, by name: QueryDict.getlist or equal.
QueryLookup = Callable[[str], Sequence[str]]


@dataclass(frozen=True, slots=True)
class Window:
    """F(offset) .. F(offset + count - 1)."""

    offset: int
    count: int


def single(values: Sequence[str]) -> str | None | _Repeated:
    """The one value of a parameter: None when absent, REPEATED when given twice or more."""
    if not values:
        return None
    if len(values) > 1:
        return REPEATED
    return values[0]


def parse_decimal(raw: str, *, maximum: int) -> int | None:
    """The value of `raw` if it is plain ASCII digits for a number from 0 to maximum, else None."""
    if not raw.isascii() or not raw.isdigit():
        return None
    significant = raw.lstrip("0") or "0"
    if len(significant) > len(str(maximum)):
        return None
    value = int(significant)
    return value if value <= maximum else None


def fits(*, offset: int, count: int, maximum: int) -> bool:
    """Whether the window offset .. offset + count - 1 ends within a table of `maximum` terms."""
    return offset + count <= maximum


def _number(raw: str | None | _Repeated, *, maximum: int) -> int | None:
    return parse_decimal(raw, maximum=maximum) if isinstance(raw, str) else None


def n(lookup: QueryLookup, *, maximum: int) -> int | None:
    """How many terms a sequence query asks for, or None when `n` is absent or breaks a rule."""
    return _number(single(lookup("n")), maximum=maximum)


def offset(lookup: QueryLookup, *, maximum: int) -> int | None:
    """The first term a sequence query asks for (OFFSET_DEFAULT when absent), or None."""
    raw = single(lookup("offset"))
    return OFFSET_DEFAULT if raw is None else _number(raw, maximum=maximum)


def window(lookup: QueryLookup, *, maximum: int) -> Window | None:
    """The window a sequence query asks for, or None when `n` or `offset` breaks a rule."""
    count = n(lookup, maximum=maximum)
    first = offset(lookup, maximum=maximum)
    if count is None or first is None or not fits(offset=first, count=count, maximum=maximum):
        return None
    return Window(offset=first, count=count)


def index(raw: str | None, *, maximum: int) -> int | None:
    """The term a path's index names, or None when it breaks a rule."""
    return _number(raw, maximum=maximum)
