"""The mark of a request that our edge (nginx's limiter and cache, deploy/edge/) has counted.

With the edge in front, nginx spends the client's budgets and writes the
request's record itself, for cache hits and misses alike; a request it passes
on carries `X-Fib-Edge: counted`. The app then neither counts it again nor logs
it. The mark is believed only from our own proxies (FIB_TRUSTED_PROXIES): a
client reaching an app node directly cannot skip its budget by sending it.
What the edge is told of the app's rules: fibonacci/edge_policy.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from fibonacci.ratelimit.identity import is_from_trusted_proxy

if TYPE_CHECKING:
    from django.http import HttpRequest

# The request header nginx sets (deploy/nginx.conf) and its one value.
EDGE_HEADER: Final = "X-Fib-Edge"
COUNTED: Final = "counted"
_EDGE_META: Final = "HTTP_" + EDGE_HEADER.upper().replace("-", "_")


def forwarded_by_edge(request: HttpRequest) -> bool:
    """Whether our edge counted and logs this request (its mark, from a trusted proxy)."""
    return request.META.get(_EDGE_META) == COUNTED and is_from_trusted_proxy(request)
