"""The benchmark URLs, and the responses captured once from the real app for the baselines.

The bare WSGI callable and nginx's static server answer with these exact
bytes and Content-Type, so every comparison moves the same payload.
"""

from __future__ import annotations

import gzip
import json
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

API_PATH = "/api/v1/fibonacci/"
SIZES = (10, 1000, 10000)
# The level of Django's GZipMiddleware (django.utils.text.compress_string), which the app uses.
GZIP_LEVEL = 6


def query_for(n: int) -> str:
    """The query string of the benchmark URL for n."""
    return f"n={n}"


def url_path(n: int) -> str:
    """/api/v1/fibonacci/?n=N"""
    return f"{API_PATH}?{query_for(n)}"


def body_file_name(n: int) -> str:
    """The file holding the body for n (also what nginx's static server looks up)."""
    return f"n-{n}.json"


def fetch(url: str) -> tuple[str, bytes]:
    """(Content-Type, body) of a GET that must answer 200."""
    with urllib.request.urlopen(url, timeout=60.0) as response:
        if response.status != 200:
            raise RuntimeError(f"GET {url} answered {response.status}")
        return response.headers["Content-Type"], response.read()


def capture(*, base_url: str, sizes: Sequence[int], directory: Path) -> str:
    """Save the app's responses for `sizes` into `directory`; return their Content-Type."""
    directory.mkdir(parents=True, exist_ok=True)
    index: dict[str, dict[str, str]] = {}
    content_types = set()
    for n in sizes:
        content_type, body = fetch(base_url + url_path(n))
        (directory / body_file_name(n)).write_bytes(body)
        index[query_for(n)] = {"file": body_file_name(n), "content_type": content_type}
        content_types.add(content_type)
    (directory / "index.json").write_text(json.dumps(index, indent=2))
    if len(content_types) != 1:
        raise RuntimeError(f"benchmark URLs answered different types: {sorted(content_types)}")
    return content_types.pop()


def verify_same(*, expected: Mapping[int, str], actual: Mapping[int, str]) -> None:
    """Raise unless both URL sets (n -> URL) answer with identical type and bytes."""
    for n, expected_url in expected.items():
        wanted = fetch(expected_url)
        got = fetch(actual[n])
        if wanted != got:
            raise RuntimeError(
                f"n={n}: {actual[n]} differs from {expected_url} "
                f"({got[0]}, {len(got[1])} B vs {wanted[0]}, {len(wanted[1])} B)"
            )


def write_gzipped(*, directory: Path, sizes: Sequence[int]) -> None:
    """Beside each captured body, its gzipped copy (`n-N.json.gz`), as the app compresses it.

    nginx serves these as plain files (a type it does not compress), so they are
    the baseline for answers sent gzipped: the same number of bytes, no work per request.
    """
    for n in sizes:
        body = (directory / body_file_name(n)).read_bytes()
        gzipped = gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
        (directory / f"{body_file_name(n)}.gz").write_bytes(gzipped)


@dataclass(frozen=True)
class Encoded:
    """How an answer to `Accept-Encoding: gzip` came: its Content-Encoding and body size."""

    content_encoding: str
    body_bytes: int


def fetch_gzip(url: str) -> Encoded:
    """GET `url` with `Accept-Encoding: gzip`: the answer's encoding and size as sent."""
    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=60.0) as response:
        return Encoded(
            content_encoding=response.headers.get("Content-Encoding") or "identity",
            body_bytes=len(response.read()),
        )
