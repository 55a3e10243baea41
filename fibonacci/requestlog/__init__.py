"""The request log: record every API request off the hot path, write it in batches.

`RequestLogMiddleware` appends one small tuple per request to a bounded
in-process buffer; a background thread per process parses the tuples and
bulk-inserts them as `RequestLog` rows. `shutdown()` flushes and stops the
writer (gunicorn's worker_exit hook calls it; so does atexit).
"""

from __future__ import annotations

from .buffer import RequestLogBuffer, current_buffer, flush, replace_buffer, shutdown, stats
from .middleware import RequestLogMiddleware
from .records import anonymize_ip

__all__ = [
    "RequestLogBuffer",
    "RequestLogMiddleware",
    "anonymize_ip",
    "current_buffer",
    "flush",
    "replace_buffer",
    "shutdown",
    "stats",
]
