"""What counts as an API request: everything under /api/ (the versioned API, its schema,
its docs and unknown API paths), judged by path_info, the path below any SCRIPT_NAME.

API requests answer problem details, are counted and logged, and skip the
admin's session, CSRF, auth and message middleware; probes, static files and
the admin are not API requests.
"""

from __future__ import annotations

from django.http import HttpRequest

API_PREFIX = "/api/"


def is_api_request(request: HttpRequest) -> bool:
    """Whether `request` is for the public API."""
    return request.path_info.startswith(API_PREFIX)
