"""What a buffered request-log record costs in memory: `python bench/request_log_footprint.py`.

Records as the middleware builds them (requestlog.rows.RawRecord, fresh
strings per request), 10,000 in a bounded deque like the buffer's, measured
with tracemalloc. No Django needed.
"""

from __future__ import annotations

import secrets
import time
import tracemalloc
from collections import deque
from collections.abc import Callable

RECORDS = 10_000
# What the record keeps whole until the writer parses it: the raw query string
# and user agent, bounded only by nginx (large_client_header_buffers 4 4k).
NGINX_LINE_BYTES = 4096


def _record(
    *, query: str, client: str, agent: str, size: int, request_id: str
) -> tuple[object, ...]:
    """A raw record in the middleware's field order (requestlog.rows.RawRecord)."""
    return (
        time.time(),
        1.5,
        "GET",
        "fibonacci-list",
        None,
        query,
        200,
        client,
        agent,
        size,
        request_id,
    )


def _typical(i: int) -> tuple[object, ...]:
    return _record(
        query=f"n={i % 100}",
        client=f"203.0.113.{i % 256}",
        agent=f"curl/8.5.{i % 10}",
        size=1_200 + i,
        request_id=secrets.token_hex(16),
    )


def _stored_limits(i: int) -> tuple[object, ...]:
    # As long as the row keeps: 512-character query, 256-character user agent,
    # a full IPv6 address, a 64-character request id from the proxy.
    return _record(
        query=f"n=10000&{'a' * 500}{i:04d}",
        client=f"2001:db8:abcd:12:{i % 65536:x}:ffff:ffff:ffff",
        agent=f"{'M' * 252}{i:04d}",
        size=10_470_678,
        request_id=secrets.token_hex(32),
    )


def _nginx_limits(i: int) -> tuple[object, ...]:
    return _record(
        query=f"n=1&{'a' * (NGINX_LINE_BYTES - 60)}{i:05d}",
        client=f"2001:db8:abcd:12:{i % 65536:x}:ffff:ffff:ffff",
        agent=f"{'M' * (NGINX_LINE_BYTES - 20)}{i:05d}",
        size=10_470_678,
        request_id=secrets.token_hex(32),
    )


def bytes_per_record(build: Callable[[int], tuple[object, ...]]) -> float:
    """Traced bytes per record of RECORDS records built by build, held in a deque."""
    tracemalloc.start()
    try:
        held: deque[tuple[object, ...]] = deque(maxlen=RECORDS)
        for i in range(RECORDS):
            held.append(build(i))
        size, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return size / RECORDS


def main() -> None:
    """Print bytes per record and per 10,000 for three sizes of request."""
    for name, build in (
        ("typical (short query and user agent)", _typical),
        ("at the lengths a row keeps", _stored_limits),
        ("at nginx's 4 KB line and header limits", _nginx_limits),
    ):
        per_record = bytes_per_record(build)
        total_mb = per_record * RECORDS / 1e6
        print(f"{name}: {per_record:,.0f} bytes per record, {total_mb:.1f} MB per {RECORDS:,}")


if __name__ == "__main__":
    main()
