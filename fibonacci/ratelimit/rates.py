"""The one reader of a rate ("120/m", "100/5m"): settings validate with it, budgets count with it.

No Django imports: fibproject.settings uses it at start-up.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# COUNT/[MULTIPLIER]UNIT; a zero multiplier would be a window of no time at all.
_RATE = re.compile(r"([0-9]+)/([1-9][0-9]*)?([smhd])")


@dataclass(frozen=True, slots=True)
class Rate:
    """`count` requests per window of `window_seconds`."""

    count: int
    window_seconds: int


@functools.lru_cache(maxsize=16)
def parse_rate(text: str) -> Rate:
    """`120/m` -> Rate(120, 60), `100/5m` -> Rate(100, 300); ValueError for anything else."""
    match = _RATE.fullmatch(text)
    if match is None:
        raise ValueError(f"a rate looks like 120/m or 100/5m, not {text!r}")
    count, multiplier, unit = match.groups()
    return Rate(count=int(count), window_seconds=int(multiplier or 1) * _UNIT_SECONDS[unit])
