"""Synthetic edge log lines, byte for byte as nginx writes them (docs/request-log.md).

nginx's `log_format ... escape=json` escapes `"` and `\\` with a backslash,
\\n \\r \\t \\b \\f as such, other bytes below 0x20 as \\u00XX, and passes
every other byte unchanged (UTF-8 or not); $msec and $request_time have
three decimals. EdgeLogFile appends each line with one write(), as nginx
does with an unbuffered access_log.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_SHORT_ESCAPES = {0x22: b'\\"', 0x5C: b"\\\\", 0x0A: b"\\n", 0x0D: b"\\r", 0x09: b"\\t"}
_SHORT_ESCAPES |= {0x08: b"\\b", 0x0C: b"\\f"}


def nginx_json_escape(value: str | bytes) -> bytes:
    """value escaped as nginx's escape=json does (a str is taken as its UTF-8 bytes)."""
    raw = value.encode() if isinstance(value, str) else value
    out = bytearray()
    for byte in raw:
        if byte in _SHORT_ESCAPES:
            out += _SHORT_ESCAPES[byte]
        elif byte < 0x20:
            out += b"\\u%04x" % byte
        else:
            out.append(byte)
    return bytes(out)


def new_request_id() -> str:
    """An id of nginx's $request_id form: 32 hex digits."""
    return secrets.token_hex(16)


def request_line(
    *,
    request_id: str | None = None,
    done: float | None = None,
    seconds: float = 0.002,
    method: str = "GET",
    uri: str | bytes = "/api/v1/fibonacci/?n=5",
    status: int = 200,
    body_bytes: int = 40,
    client: str = "203.0.113.7",
    agent: str | bytes = "curl/8.5.0",
    cache_status: str = "MISS",
    limit: str = "",
) -> bytes:
    """One `"k":"r"` line (with its newline): one request as the edge answered it."""
    e = nginx_json_escape
    return (
        b'{"k":"r","id":"%s","t":%.3f,"rt":%.3f,"m":"%s","u":"%s","s":"%d","b":%d,'
        b'"c":"%s","a":"%s","cs":"%s","l":"%s"}\n'
        % (
            e(new_request_id() if request_id is None else request_id),
            time.time() if done is None else done,
            seconds,
            e(method),
            e(uri),
            status,
            body_bytes,
            e(client),
            e(agent),
            e(cache_status),
            e(limit),
        )
    )


def aggregate_line(
    *,
    aggregate_id: str | None = None,
    minute: int = 1_796_300_000 // 60 * 60,
    client: str = "203.0.113.7",
    why: str = "shield",
    status: int = 429,
    count: int = 1,
) -> bytes:
    """One `"k":"a"` line (with its newline): requests counted for a client and minute."""
    e = nginx_json_escape
    return b'{"k":"a","id":"%s","minute":%d,"c":"%s","why":"%s","s":%d,"n":%d}\n' % (
        e(secrets.token_hex(8) if aggregate_id is None else aggregate_id),
        minute,
        e(client),
        e(why),
        status,
        count,
    )


def request_id_of(line: bytes) -> str:
    """The id field of a line made here."""
    return line.split(b'"id":"', 1)[1].split(b'"', 1)[0].decode()


@dataclass
class EdgeLogFile:
    """An edge log written as nginx writes it: an fd opened for appending, one write per line."""

    path: Path
    fd: int = field(init=False)

    def __post_init__(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, *lines: bytes) -> None:
        """Append each line with one write()."""
        for line in lines:
            os.write(self.fd, line)

    def reopen(self) -> None:
        """What `nginx -s reopen` does: open the path again (after a rotation renamed it)."""
        old = self.fd
        self.__post_init__()
        os.close(old)

    def close(self) -> None:
        """Close the descriptor."""
        os.close(self.fd)


class FakeClock:
    """A monotonic clock that moves only when told (`clock.now += seconds`)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ship_all(shipper: Any) -> int:
    """Let an EdgeLogShipper ship batches until nothing is left; the lines it consumed."""
    consumed: int = shipper.ship_available()
    total = consumed
    while consumed:
        consumed = shipper.ship_available()
        total += consumed
    return total
