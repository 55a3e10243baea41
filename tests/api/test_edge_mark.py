"""The edge's mark: believed from a trusted proxy only, and checked against this app's policy."""

from __future__ import annotations

import logging

import pytest

from fibonacci import edge
from fibonacci.edge_policy import policy_fingerprint
from fibonacci.ratelimit import budgets

URL = "/api/v1/fibonacci/"
PROXY = "10.0.0.5"


@pytest.fixture(autouse=True)
def trusted_proxy(settings):
    """Our proxy at PROXY; counters up (no outage remembered from another test)."""
    settings.FIB_TRUSTED_PROXIES = [PROXY]
    budgets._Outage.until = 0.0
    edge._fingerprints_seen.clear()
    yield
    edge._fingerprints_seen.clear()


def _get(client, mark: str, *, peer: str = PROXY):
    return client.get(
        URL, {"n": "5"}, REMOTE_ADDR=peer, HTTP_X_REAL_IP="198.51.100.4", HTTP_X_FIB_EDGE=mark
    )


def test_a_request_the_edge_counted_is_not_counted_again(client, caplog):
    with caplog.at_level(logging.WARNING, logger="fibonacci.edge"):
        response = _get(client, f"counted {policy_fingerprint()}")

    assert response.status_code == 200
    assert "RateLimit" not in response, "the edge writes the RateLimit fields"
    assert caplog.records == []


def test_a_stale_edge_policy_is_said_once_and_the_request_still_not_counted_twice(client, caplog):
    with caplog.at_level(logging.WARNING, logger="fibonacci.edge"):
        responses = [_get(client, "counted 0123456789abcdef") for _ in range(3)]

    assert all("RateLimit" not in response for response in responses)
    assert [record.getMessage() for record in caplog.records] == [
        f"the edge's policy (0123456789abcdef) is not this app's ({policy_fingerprint()}): "
        "run `manage.py edge_policy` and reload nginx (docs/edge.md)"
    ]


@pytest.mark.parametrize(
    ("mark", "peer"),
    [
        ("counted 0123456789abcdef", "203.0.113.9"),
        ("counted", "203.0.113.9"),
        ("countedx", PROXY),
        ("", PROXY),
    ],
    ids=["untrusted-peer", "untrusted-bare", "not-the-word", "absent"],
)
def test_anyone_elses_mark_is_not_believed(client, mark, peer):
    response = _get(client, mark, peer=peer)
    assert response["RateLimit-Policy"].startswith('"default"'), "the app counted it"
