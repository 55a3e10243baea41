"""The request log: one row per API request, recorded off the hot path and written in batches.

`middleware` appends one small tuple per request to a bounded in-process
buffer (`buffer`); a background thread per process turns the tuples into
rows (`rows`) and writes them in one statement per batch (`writer`).
`buffer.shutdown()` flushes and stops the writer (gunicorn's worker_exit hook
calls it; so does atexit). Operators read the rows in the admin (`admin`,
`summary`) and prune them with `manage.py prune_request_logs`.
"""
