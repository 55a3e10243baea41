"""The edge's part of the request log in the admin: the cache column and filter, aggregates,
the usage summary's hits, misses and aggregated counts, and the shipping backlog."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.utils import timezone

from requestlog.models import EdgeLogPosition, RequestAggregate, RequestLog

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/requestlog/requestlog/"
AGGREGATES = "/admin/requestlog/requestaggregate/"
SUMMARY = "/admin/requestlog/requestlog/summary/"
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def _log(request_id: str, cache: str) -> RequestLog:
    return RequestLog(
        time=NOW,
        method="GET",
        endpoint="sequence",
        n=5,
        offset=0,
        query="n=5",
        status=200,
        client_ip="198.51.100.1",
        user_agent="curl/8",
        duration_ms=0.1,
        response_bytes=40,
        request_id=request_id,
        cache=cache,
    )


@pytest.fixture
def logs() -> None:
    RequestLog.objects.bulk_create(
        [_log("hit-1", "hit"), _log("hit-2", "hit"), _log("hit-3", "hit")]
        + [_log("miss-1", "miss"), _log("bypass-1", "bypass"), _log("app-1", "")]
    )
    RequestAggregate.objects.bulk_create(
        [
            RequestAggregate(
                minute=NOW,
                client_ip="203.0.113.9",
                reason="shield",
                status=429,
                count=500,
                aggregate_id="a1",
            ),
            RequestAggregate(
                minute=NOW - timedelta(minutes=1),
                client_ip="203.0.113.9",
                reason="over_rate",
                status=200,
                count=70,
                aggregate_id="a2",
            ),
            RequestAggregate(
                minute=NOW - timedelta(days=30),
                client_ip="203.0.113.9",
                reason="shield",
                status=429,
                count=9,
                aggregate_id="old",
            ),
        ]
    )


@pytest.fixture
def staff_client(client):
    """A staff user who may view request logs and aggregates."""
    user = User.objects.create_user("operator", password=None, is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(codename="view_requestlog"),
        Permission.objects.get(codename="view_requestaggregate"),
    )
    client.force_login(user)
    return client


def _shown(response, attribute: str) -> set[str]:
    assert response.status_code == 200
    return {getattr(row, attribute) for row in response.context["cl"].result_list}


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("hit", {"hit-1", "hit-2", "hit-3"}),
        ("miss", {"miss-1"}),
        ("bypass", {"bypass-1"}),
        ("none", {"app-1"}),
    ],
)
def test_changelist_filters_by_cache_outcome(staff_client, logs, value, shown):
    assert _shown(staff_client.get(CHANGELIST, {"cache": value}), "request_id") == shown


def test_changelist_shows_the_cache_column(staff_client, logs):
    page = staff_client.get(CHANGELIST, {"cache": "miss"}).content.decode()
    assert "column-cache" in page and ">miss<" in page


def test_aggregates_are_listed_read_only_and_searchable(staff_client, logs):
    assert _shown(staff_client.get(AGGREGATES), "aggregate_id") == {"a1", "a2", "old"}
    found = staff_client.get(AGGREGATES, {"q": " 203.0.113.9 "})
    assert _shown(found, "aggregate_id") == {"a1", "a2", "old"}
    assert _shown(staff_client.get(AGGREGATES, {"q": "203.0.113.10"}), "aggregate_id") == set()
    RequestAggregate.objects.create(
        minute=NOW,
        client_ip="2001:db8:1:2::/64",
        reason="shield",
        status=429,
        count=3,
        aggregate_id="v6",
    )
    found = staff_client.get(AGGREGATES, {"q": "2001:DB8:1:2::77"})  # an address in that /64
    assert _shown(found, "aggregate_id") == {"v6"}
    assert _shown(staff_client.get(AGGREGATES, {"reason": "over_rate"}), "aggregate_id") == {"a2"}
    assert staff_client.get(f"{AGGREGATES}add/").status_code == 403
    assert (
        staff_client.post(
            f"{AGGREGATES}{RequestAggregate.objects.get(aggregate_id='a1').pk}/change/"
        ).status_code
        == 403
    )


def test_summary_shows_hits_misses_aggregates_and_the_shipping_backlog(staff_client, logs):
    EdgeLogPosition.objects.create(
        path="/var/log/nginx/fibonacci-edge.jsonl",
        inode=7,
        offset=100,
        lag_bytes=4321,
        skipped_lines=2,
        last_shipped=NOW,
        updated=NOW,
    )
    response = staff_client.get(SUMMARY, {"since": "2026-03-09", "until": "2026-03-10"})
    summary = response.context["summary"]
    assert dict(summary.cache_mix)["hit"] == 3 and dict(summary.cache_mix)["miss"] == 1
    assert summary.cache_hit_percent == pytest.approx(75.0)
    assert summary.aggregated_total == 570  # the month-old aggregate is outside the period
    page = response.content.decode()
    assert "75.0% of hits and misses" in page
    assert "4321" in page and "/var/log/nginx/fibonacci-edge.jsonl" in page


def test_prune_deletes_aggregates_older_than_the_retention():
    now = timezone.now()
    RequestAggregate.objects.bulk_create(
        [
            RequestAggregate(
                minute=now - timedelta(days=days),
                client_ip="203.0.113.9",
                reason="shield",
                status=429,
                count=1,
                aggregate_id=f"age-{days}",
            )
            for days in (40, 11, 9, 0)
        ]
    )
    call_command("prune_request_logs", days=10, batch_size=1, pause_ms=0)
    assert set(RequestAggregate.objects.values_list("aggregate_id", flat=True)) == {
        "age-9",
        "age-0",
    }
