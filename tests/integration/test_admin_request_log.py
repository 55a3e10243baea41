"""The request log in the admin: read-only changelist, filters, search, summary, retention."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from requestlog import admin as log_admin
from requestlog.models import RequestLog

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/requestlog/requestlog/"
SUMMARY = "/admin/requestlog/requestlog/summary/"
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def _log(**fields):
    values = {
        "time": NOW,
        "method": "GET",
        "endpoint": "sequence",
        "n": 5,
        "offset": 0,
        "query": "n=5",
        "status": 200,
        "client_ip": "198.51.100.1",
        "user_agent": "curl/8",
        "duration_ms": 1.5,
        "response_bytes": 40,
        "rate_limited": False,
        "request_id": f"rid-{fields.get('status', 200)}-{fields.get('client_ip', 'x')}",
    }
    values.update(fields)
    return RequestLog(**values)


@pytest.fixture
def logs():
    """Six requests of different kinds, from three clients, over two days."""
    return RequestLog.objects.bulk_create(
        [
            _log(request_id="ok-1"),
            _log(request_id="ok-2", n=10, time=NOW - timedelta(days=1)),
            _log(request_id="term-1", endpoint="term", n=None, offset=None, index=7),
            _log(request_id="bad-1", status=400, n=None, client_ip="203.0.113.5"),
            _log(request_id="limited-1", status=429, rate_limited=True, client_ip="203.0.113.5"),
            _log(request_id="fail-1", status=500, client_ip="2001:db8::1"),
        ]
    )


@pytest.fixture
def staff_client(client):
    """A logged-in staff user who may view (only view) request logs."""
    user = User.objects.create_user("operator", password=None, is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_requestlog"))
    client.force_login(user)
    return client


@pytest.fixture
def superuser_client(client):
    """A logged-in superuser."""
    client.force_login(User.objects.create_superuser("root", password=None))
    return client


def _shown_ids(response):
    assert response.status_code == 200
    return {log.request_id for log in response.context["cl"].result_list}


def test_changelist_shows_every_record_with_its_columns(staff_client, logs):
    response = staff_client.get(CHANGELIST)
    assert _shown_ids(response) == {log.request_id for log in logs}
    html = response.content.decode()
    for text in ("198.51.100.1", "n=5 offset=0", "index=7", "429", "Usage summary"):
        assert text in html


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"status_class": "2"}, {"ok-1", "ok-2", "term-1"}),
        ({"status_class": "4"}, {"bad-1", "limited-1"}),
        ({"status_class": "5"}, {"fail-1"}),
        ({"endpoint": "term"}, {"term-1"}),
        ({"rate_limited__exact": "1"}, {"limited-1"}),
        (
            {"time__gte": "2026-03-09 00:00:00+00:00", "time__lt": "2026-03-10 00:00:00+00:00"},
            {"ok-2"},
        ),
        ({"time__year": "2026", "time__month": "3", "time__day": "9"}, {"ok-2"}),
        ({"q": "203.0.113.5"}, {"bad-1", "limited-1"}),
        ({"q": "2001:db8::1"}, {"fail-1"}),
        ({"q": "2001:DB8:0::0001"}, {"fail-1"}),  # any spelling of the address
        ({"q": "term-1"}, {"term-1"}),
        ({"q": "203.0.113"}, set()),  # exact matches only
    ],
)
def test_changelist_filters_search_and_date_drill_down(staff_client, logs, query, expected):
    assert _shown_ids(staff_client.get(CHANGELIST, query)) == expected


@pytest.mark.parametrize("path", [CHANGELIST, SUMMARY])
def test_anonymous_users_are_sent_to_the_login_page(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize("path", [CHANGELIST, SUMMARY])
def test_staff_without_the_view_permission_is_refused(client, path):
    client.force_login(User.objects.create_user("clerk", password=None, is_staff=True))
    assert client.get(path).status_code == 403


@pytest.mark.parametrize("who", ["staff_client", "superuser_client"])
def test_nobody_can_add_or_change_records(request, logs, who):
    client = request.getfixturevalue(who)
    log = logs[0]
    assert client.get(f"{CHANGELIST}add/").status_code == 403
    change_url = f"{CHANGELIST}{log.pk}/change/"
    page = client.get(change_url)
    assert page.status_code == 200  # a read-only view
    assert b'name="_save"' not in page.content
    response = client.post(change_url, {"status": "201", "client_ip": "1.1.1.1"})
    assert response.status_code == 403
    log.refresh_from_db()
    assert (log.status, log.client_ip) == (200, "198.51.100.1")


def test_only_superusers_may_delete(staff_client, logs):
    url = f"{CHANGELIST}{logs[0].pk}/delete/"
    assert staff_client.get(url).status_code == 403
    staff_client.force_login(User.objects.create_superuser("root", password=None))
    assert staff_client.post(url, {"post": "yes"}).status_code == 302
    assert not RequestLog.objects.filter(pk=logs[0].pk).exists()


def test_summary_shows_the_chosen_period(staff_client):
    # 100 requests on March 9 and 10 with durations 1..100 ms: the percentiles are known.
    RequestLog.objects.bulk_create(
        [
            _log(
                request_id=f"r{i}",
                time=NOW - timedelta(days=i % 2),
                duration_ms=float(i),
                n=3 if i <= 60 else 8,
                client_ip="198.51.100.7" if i <= 70 else "203.0.113.9",
                status=429 if i > 90 else 200,
                rate_limited=i > 90,
            )
            for i in range(1, 101)
        ]
        + [_log(request_id="outside", time=NOW - timedelta(days=30), n=999)]
    )
    response = staff_client.get(SUMMARY, {"since": "2026-03-09", "until": "2026-03-10"})
    assert response.status_code == 200
    summary = response.context["summary"]
    assert summary.total == 100
    assert summary.per_day == [(NOW.date() - timedelta(days=1), 50), (NOW.date(), 50)]
    assert summary.top_clients == [("198.51.100.7", 70), ("203.0.113.9", 30)]
    assert summary.status_mix == [("2xx", 90), ("4xx", 10)]
    assert summary.rate_limited == 10
    assert (summary.p50_ms, summary.p95_ms) == (50.0, 95.0)
    assert summary.busiest_n == [(3, 60), (8, 40)]
    html = response.content.decode()
    assert html.count("<rect ") == 2
    assert "10.0%" in html
    assert "http" not in html.split("<svg", 1)[1].split("</svg>", 1)[0].replace(
        "http://www.w3.org", ""
    )


def test_summary_refuses_a_period_ending_at_the_last_representable_day(staff_client):
    response = staff_client.get(SUMMARY, {"since": "9999-12-31", "until": "9999-12-31"})
    assert response.status_code == 200
    assert response.context["summary"] is None
    assert "must end before" in response.content.decode()


def test_search_for_unknown_finds_clients_without_an_address(staff_client):
    RequestLog.objects.bulk_create(
        [_log(request_id="nowhere-1", client_ip="unknown"), _log(request_id="somewhere-1")]
    )
    assert _shown_ids(staff_client.get(CHANGELIST, {"q": "unknown"})) == {"nowhere-1"}


def test_summary_refuses_a_backwards_period(staff_client):
    response = staff_client.get(SUMMARY, {"since": "2026-03-10", "until": "2026-03-01"})
    assert response.status_code == 200
    assert response.context["summary"] is None
    assert "must end on or after" in response.content.decode()


def test_changelist_count_is_estimated_on_postgresql_and_exact_elsewhere(staff_client, monkeypatch):
    RequestLog.objects.bulk_create([_log(request_id=f"e{i}") for i in range(30)])
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE fibonacci_requestlog")
    RequestLog.objects.filter(request_id__in=[f"e{i}" for i in range(10)]).delete()
    monkeypatch.setattr(log_admin, "EXACT_COUNT_BELOW", 1)
    counted = staff_client.get(CHANGELIST).context["cl"].result_count
    # PostgreSQL answers from its statistics (30 rows at the last ANALYZE), not a count.
    assert counted == (30 if connection.vendor == "postgresql" else 20)


def test_prune_deletes_only_records_older_than_the_retention(settings):
    settings.FIB_LOG_RETENTION_DAYS = 30
    now = timezone.now()
    ages = {"old-40": 40, "old-31": 31, "new-29": 29, "new-0": 0}
    RequestLog.objects.bulk_create(
        [_log(request_id=name, time=now - timedelta(days=days)) for name, days in ages.items()]
    )
    call_command("prune_request_logs", batch_size=1, pause_ms=0)
    assert set(RequestLog.objects.values_list("request_id", flat=True)) == {"new-29", "new-0"}
    call_command("prune_request_logs", days=1, pause_ms=0)
    assert set(RequestLog.objects.values_list("request_id", flat=True)) == {"new-0"}


def test_generate_command_fills_the_table_with_plausible_rows():
    call_command("generate_request_logs", 250, days=3, batch_size=100)
    assert RequestLog.objects.count() == 250
    assert (
        RequestLog.objects.filter(time__lt=timezone.now() - timedelta(days=3, minutes=1)).count()
        == 0
    )
    assert set(RequestLog.objects.values_list("endpoint", flat=True)) == {"sequence", "term"}


def test_date_drill_down_offers_exactly_the_days_that_have_records(staff_client, logs):
    response = staff_client.get(CHANGELIST, {"time__year": "2026", "time__month": "3"})
    offered = re.findall(r'href="\?time__day=(\d+)&amp;', response.content.decode())
    assert offered == ["9", "10"]
