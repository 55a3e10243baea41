"""The benchmark's baseline: a bare WSGI callable that serves prepared responses from memory.

It answers the benchmark URLs with exactly the bytes and the Content-Type the
real application produced for them (captured once by `bench/responses.py`),
keyed by query string, so that app/bare isolates what Django, DRF and the
project add per request. The directory of captured responses is named by
BENCH_RESPONSES_DIR; everything is read at import, which gunicorn's
--preload does once in the master.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

StartResponse = Callable[..., Any]
Prepared = tuple[bytes, list[tuple[str, str]]]

_NOT_FOUND_BODY = b"not a benchmark URL\n"


def load_responses(directory: Path) -> dict[str, Prepared]:
    """Query string -> (body, headers) from the index written by `responses.py`."""
    index: dict[str, dict[str, str]] = json.loads((directory / "index.json").read_text())
    prepared: dict[str, Prepared] = {}
    for query, entry in index.items():
        body = (directory / entry["file"]).read_bytes()
        headers = [("Content-Type", entry["content_type"]), ("Content-Length", str(len(body)))]
        prepared[query] = (body, headers)
    return prepared


_RESPONSES = load_responses(Path(os.environ["BENCH_RESPONSES_DIR"]))


def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Serve the prepared body for this query string, or 404."""
    found = _RESPONSES.get(environ.get("QUERY_STRING", ""))
    if found is None:
        start_response(
            "404 Not Found",
            [("Content-Type", "text/plain"), ("Content-Length", str(len(_NOT_FOUND_BODY)))],
        )
        return [_NOT_FOUND_BODY]
    body, headers = found
    start_response("200 OK", headers)
    return [body]
