"""The mark of a request that our edge (nginx's limiter and cache, deploy/edge/) has counted.

With the edge in front, nginx spends the client's budgets and writes the
request's record itself, for cache hits and misses alike; a request it passes
on carries `X-Fib-Edge: counted`. The app then neither counts it again nor logs
it. The mark is believed only from our own proxies (FIB_TRUSTED_PROXIES): a
client reaching an app node directly cannot skip its budget by sending it.
What the edge is told of the app's rules: fibonacci/edge_policy.py.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

from fibonacci.ratelimit.identity import is_from_trusted_proxy

if TYPE_CHECKING:
    from django.http import HttpRequest

# The request header the edge sets: `counted <its policy's fingerprint>`.
EDGE_HEADER: Final = "X-Fib-Edge"
COUNTED: Final = "counted"
_EDGE_META: Final = "HTTP_" + EDGE_HEADER.upper().replace("-", "_")

logger = logging.getLogger(__name__)
# The fingerprints this process has compared with its own policy's: equal or not.
_fingerprints_seen: dict[str, bool] = {}


def forwarded_by_edge(request: HttpRequest) -> bool:
    """Whether our edge counted and logs this request (its mark, from a trusted proxy)."""
    mark: str = request.META.get(_EDGE_META, "")
    word, _, fingerprint = mark.partition(" ")
    if word != COUNTED or not is_from_trusted_proxy(request):
        return False
    if fingerprint not in _fingerprints_seen:
        _compare_policy(fingerprint)
    return True


def _compare_policy(fingerprint: str) -> None:
    """Say once when the edge runs a policy other than this app's settings give.

    The request was counted all the same, under the names the edge's policy
    gives, so it is not counted again; but the edge and the app (or another
    app node) may then spend different budgets: write the policy, reload nginx.
    """
    from fibonacci.edge_policy import policy_fingerprint  # imports the API: lazily

    _fingerprints_seen[fingerprint] = same = fingerprint == policy_fingerprint()
    if not same:
        logger.warning(
            "the edge's policy (%s) is not this app's (%s): run `manage.py edge_policy` "
            "and reload nginx (docs/edge.md)",
            fingerprint or "none",
            policy_fingerprint(),
        )
