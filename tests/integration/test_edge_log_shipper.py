"""The edge log shipper: each line of nginx's edge log once in the request log, whatever happens.

The shipper runs in-process against the test database (both passes); the
file is written as nginx writes it (tests/edge_log_lines.py). Rotation waits
are on a fake clock. The same against a real PostgreSQL stopped under it,
and a shipper process killed and restarted: tests/e2e/test_edge_log_shipper_faults.py.
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import OperationalError

from requestlog import shipper as shipper_module
from requestlog.models import EdgeLogPosition, RequestAggregate, RequestLog
from requestlog.rows import cache_outcome, decode_edge_line, edge_record
from requestlog.shipper import EdgeLogShipper, lag_bytes
from tests.edge_log_lines import (
    EdgeLogFile,
    FakeClock,
    aggregate_line,
    request_id_of,
    request_line,
    ship_all,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _shipper(path: Path, clock: FakeClock, **options) -> EdgeLogShipper:
    return EdgeLogShipper(str(path), clock=clock, rotation_grace_seconds=2.0, **options)


def _stored_ids() -> list[str]:
    return sorted(RequestLog.objects.values_list("request_id", flat=True))


def _lines(count: int, **fields) -> list[bytes]:
    return [request_line(**fields) for _ in range(count)]


def _ids(lines: list[bytes]) -> list[str]:
    return sorted(request_id_of(line) for line in lines)


# --- What a line becomes -------------------------------------------------------


def test_request_lines_become_rows_by_the_apps_own_mapping(nginx_log, log_path, clock):
    done = datetime(2026, 12, 3, 12, 0, 1, 500_000, tzinfo=UTC).timestamp()
    nginx_log.write(
        request_line(
            request_id="a" * 32, done=done, seconds=0.25, uri="/api/v1/fibonacci/?n=5&offset=2"
        ),
        request_line(request_id="b" * 32, uri="/api/v1/fibonacci/%37/", cache_status="HIT"),
        request_line(request_id="c" * 32, uri="/api/v1/", cache_status=""),
        request_line(request_id="d" * 32, uri="/api/v1/nothing-here", status=404),
        request_line(request_id="e" * 32, uri="", method="", status=400, cache_status=""),
        request_line(request_id="f" * 32, status=429, limit="default", cache_status=""),
        request_line(request_id="0" * 32, uri="/api/v1/fibonacci/?n=-1", status=400),
        request_line(request_id="1" * 32, client="2001:DB8:0::1", agent="Mozilla/5.0 \x01 \xe9"),
    )
    assert ship_all(_shipper(log_path, clock)) == 8

    rows = {row.request_id[0]: row for row in RequestLog.objects.all()}
    first = rows["a"]
    assert (first.endpoint, first.n, first.offset, first.index) == ("sequence", 5, 2, None)
    assert first.query == "n=5&offset=2"
    assert first.time == datetime(2026, 12, 3, 12, 0, 1, 250_000, tzinfo=UTC)  # t - rt
    assert first.duration_ms == pytest.approx(250.0)
    assert (first.status, first.response_bytes, first.method) == (200, 40, "GET")
    assert (first.client_ip, first.user_agent, first.cache) == ("203.0.113.7", "curl/8.5.0", "miss")
    assert (rows["b"].endpoint, rows["b"].index, rows["b"].cache) == ("term", 7, "hit")
    assert (rows["c"].endpoint, rows["c"].cache) == ("root", "")
    assert rows["d"].endpoint == "unknown"
    assert (rows["e"].endpoint, rows["e"].status, rows["e"].query) == ("unknown", 400, "")
    assert rows["f"].rate_limited and rows["f"].status == 429
    assert (rows["0"].endpoint, rows["0"].n) == ("sequence", None)  # invalid: no number
    assert rows["1"].client_ip == "2001:db8::1"
    # The agent's bytes as WSGI would hand them to the app: latin-1 characters.
    assert rows["1"].user_agent == "Mozilla/5.0 \x01 \xc3\xa9"


@pytest.mark.parametrize(
    ("upstream_cache_status", "stored"),
    [
        ("HIT", "hit"),
        ("STALE", "hit"),
        ("UPDATING", "hit"),
        ("REVALIDATED", "hit"),
        ("MISS", "miss"),
        ("EXPIRED", "miss"),
        ("BYPASS", "bypass"),
        ("", ""),
    ],
)
def test_cache_column_maps_nginx_cache_status(
    upstream_cache_status, stored, nginx_log, log_path, clock
):
    assert cache_outcome(upstream_cache_status) == stored
    nginx_log.write(request_line(cache_status=upstream_cache_status))
    ship_all(_shipper(log_path, clock))
    assert list(RequestLog.objects.values_list("cache", flat=True)) == [stored]


def test_aggregates_are_stored_once_in_the_logs_address_form(settings, nginx_log, log_path, clock):
    settings.FIB_LOG_IP_ANONYMIZE = True
    minute = int(datetime(2026, 12, 3, 12, 7, tzinfo=UTC).timestamp())
    lines = [
        aggregate_line(aggregate_id="s1", minute=minute, client="203.0.113.77", why="shield"),
        aggregate_line(
            aggregate_id="o1",
            minute=minute,
            client="2001:db8:1:2::/64",  # the edge counts IPv6 by /64
            why="over_rate",
            status=200,
            count=1234,
        ),
    ]
    nginx_log.write(*lines, request_line(client="198.51.100.200"))
    ship_all(_shipper(log_path, clock))
    nginx_log.write(*lines)  # the same aggregates again: nothing added
    ship_all(_shipper(log_path, clock))

    stored = {
        row.aggregate_id: (row.minute, row.client_ip, row.reason, row.status, row.count)
        for row in RequestAggregate.objects.all()
    }
    at = datetime(2026, 12, 3, 12, 7, tzinfo=UTC)
    assert stored == {
        "s1": (at, "203.0.113.0", "shield", 429, 1),
        "o1": (at, "2001:db8:1::", "over_rate", 200, 1234),
    }
    assert list(RequestLog.objects.values_list("client_ip", flat=True)) == ["198.51.100.0"]


@pytest.mark.parametrize(
    ("client", "stored"),
    [
        ("2001:db8:1:2::/64", "2001:db8:1:2::/64"),  # the budget key the edge counted
        ("192.0.2.8", "192.0.2.8"),
        ("2001:db8:1:2::/48", "unknown"),  # not a budget key
        ("not an address", "unknown"),
    ],
)
def test_an_aggregates_client_is_the_edges_budget_key(client, stored, nginx_log, log_path, clock):
    nginx_log.write(aggregate_line(client=client))
    ship_all(_shipper(log_path, clock))
    assert list(RequestAggregate.objects.values_list("client_ip", flat=True)) == [stored]


# --- Once: partial lines, restarts, duplicates ------------------------------------


def test_a_partial_last_line_waits_for_its_end(nginx_log, log_path, clock):
    whole = _lines(2)
    last = request_line()
    nginx_log.write(*whole, last[:25])
    shipper = _shipper(log_path, clock)
    ship_all(shipper)
    assert _stored_ids() == _ids(whole)
    assert EdgeLogPosition.objects.get().offset == sum(len(line) for line in whole)

    nginx_log.write(last[25:])
    ship_all(shipper)
    assert _stored_ids() == _ids([*whole, last])
    assert EdgeLogPosition.objects.get().offset == log_path.stat().st_size


def test_a_restarted_shipper_continues_where_the_last_commit_ended(nginx_log, log_path, clock):
    lines = _lines(10)
    nginx_log.write(*lines)
    first = _shipper(log_path, clock, batch_lines=3)
    assert first.ship_available() == 3
    assert first.ship_available() == 3
    first.close()  # stopped between batches, as a crash after a commit would leave it

    second = _shipper(log_path, clock, batch_lines=3)
    assert ship_all(second) == 4  # only what the first had not committed
    assert _stored_ids() == _ids(lines)


def test_rows_and_position_commit_together_or_not_at_all(monkeypatch, nginx_log, log_path, clock):
    lines = [*_lines(3), aggregate_line(), *_lines(2)]
    nginx_log.write(*lines)

    def database_gone(rows, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    # The request rows are inserted first; the batch then fails on its aggregate.
    monkeypatch.setattr(shipper_module, "insert_aggregates", database_gone)
    failing = _shipper(log_path, clock)
    with pytest.raises(OperationalError):
        failing.ship_available()
    assert not RequestLog.objects.exists()
    assert not EdgeLogPosition.objects.exists()

    monkeypatch.undo()
    ship_all(_shipper(log_path, clock))  # a restart ships the whole batch, once
    assert _stored_ids() == _ids([line for line in lines if b'"k":"r"' in line])
    assert RequestAggregate.objects.count() == 1


def test_shipping_a_file_again_adds_no_duplicate(nginx_log, log_path, clock):
    lines = [*_lines(5), aggregate_line()]
    nginx_log.write(*lines)
    ship_all(_shipper(log_path, clock))
    EdgeLogPosition.objects.all().delete()  # the position lost: the whole file again
    nginx_log.write(lines[0])  # and a line written twice
    ship_all(_shipper(log_path, clock))

    assert _stored_ids() == _ids(lines[:5])
    assert RequestAggregate.objects.count() == 1


# --- Rotation ------------------------------------------------------------------


def test_rotation_with_a_late_writer_to_the_old_file_loses_nothing(nginx_log, log_path, clock):
    rotated = Path(f"{log_path}.1")
    before, late, later, after = _lines(3), _lines(2), _lines(1), _lines(4)
    nginx_log.write(*before)
    shipper = _shipper(log_path, clock)
    ship_all(shipper)

    os.rename(log_path, rotated)  # logrotate
    log_path.touch()  # its `create`
    late_worker = EdgeLogFile(rotated)  # a worker that has not reopened yet
    nginx_log.reopen()  # the others have
    late_worker.write(*late)
    ship_all(shipper)  # the new file is empty: still reading the old one
    nginx_log.write(after[0])
    ship_all(shipper)
    clock.now += 1.0  # within the grace
    late_worker.write(*later)
    ship_all(shipper)
    assert _stored_ids() == _ids([*before, *late, *later])

    clock.now += 1.5  # past the grace: the shipper moves to the new file
    late_worker.close()
    ship_all(shipper)
    nginx_log.write(*after[1:])
    ship_all(shipper)

    assert _stored_ids() == _ids([*before, *late, *later, *after])
    position = EdgeLogPosition.objects.get()
    assert (position.inode, position.offset) == (log_path.stat().st_ino, log_path.stat().st_size)
    assert position.lag_bytes == 0


def test_a_shipper_started_after_a_rotation_finishes_the_rotated_file_first(
    nginx_log, log_path, clock
):
    rotated = Path(f"{log_path}.1")
    shipped, unshipped, new = _lines(2), _lines(3), _lines(2)
    nginx_log.write(*shipped)
    first = _shipper(log_path, clock)
    ship_all(first)
    first.close()  # the shipper is down meanwhile:
    nginx_log.write(*unshipped)
    os.rename(log_path, rotated)
    nginx_log.reopen()
    nginx_log.write(*new)

    second = _shipper(log_path, clock)
    assert lag_bytes(str(log_path)) == sum(len(line) for line in [*unshipped, *new])
    ship_all(second)
    assert _stored_ids() == _ids([*shipped, *unshipped])
    clock.now += 3
    ship_all(second)  # switches
    ship_all(second)
    assert _stored_ids() == _ids([*shipped, *unshipped, *new])
    assert lag_bytes(str(log_path)) == 0


def test_a_line_left_unfinished_in_the_rotated_file_is_skipped_at_the_switch(
    nginx_log, log_path, clock
):
    whole, cut, new = _lines(2), request_line(), _lines(2)
    nginx_log.write(*whole, cut[:30])  # nginx crashed mid-line, then was restarted
    shipper = _shipper(log_path, clock)
    ship_all(shipper)
    os.rename(log_path, f"{log_path}.1")
    nginx_log.reopen()
    nginx_log.write(*new)
    ship_all(shipper)
    clock.now += 3
    ship_all(shipper)
    ship_all(shipper)

    assert _stored_ids() == _ids([*whole, *new])
    assert EdgeLogPosition.objects.get().skipped_lines == 1


# --- Bad lines, backlog, the command ---------------------------------------------


def test_malformed_lines_are_counted_and_skipped_and_the_rest_shipped(nginx_log, log_path, clock):
    good = _lines(3)
    bad = [
        b"not json at all\n",
        b"[1, 2, 3]\n",
        b'{"k":"x","id":"abc"}\n',
        b"\n",
        request_line(request_id="")[:-1] + b"\n",  # no id: cannot be stored once
        request_line().replace(b'"s":"200"', b'"s":"2x0"'),
        request_line().replace(b'"t":', b'"t":"now","x":'),
        aggregate_line(why="because"),
        b"\xff\xfe garbage \x00\n",
    ]
    nginx_log.write(good[0], *bad, *good[1:])
    shipper = _shipper(log_path, clock)
    ship_all(shipper)

    assert _stored_ids() == _ids(good)
    assert EdgeLogPosition.objects.get().skipped_lines == len(bad)
    assert EdgeLogPosition.objects.get().offset == log_path.stat().st_size


def test_backlog_is_visible_as_bytes_behind_and_last_shipped(nginx_log, log_path, clock):
    lines = _lines(4)
    nginx_log.write(*lines)
    assert lag_bytes(str(log_path)) is None  # never shipped
    shipper = _shipper(log_path, clock, batch_lines=1)
    shipper.ship_available()

    behind = sum(len(line) for line in lines[1:])
    assert lag_bytes(str(log_path)) == behind
    position = EdgeLogPosition.objects.get()
    assert position.lag_bytes == behind
    assert position.last_shipped is not None
    ship_all(shipper)
    assert lag_bytes(str(log_path)) == 0


def test_the_command_ships_once_and_reports(nginx_log, log_path, capsys):
    lines = _lines(3)
    nginx_log.write(*lines, b"oops\n")
    call_command("ship_edge_log", str(log_path), "--once")
    assert _stored_ids() == _ids(lines)
    assert "Shipped 3 lines" in capsys.readouterr().out


@pytest.mark.django_db(transaction=True)  # the loop closes the connection after an error
def test_the_loop_retries_a_database_outage_without_losing_its_place(
    monkeypatch, nginx_log, log_path, clock
):
    lines = _lines(3)
    nginx_log.write(*lines)
    real_insert = shipper_module.insert_rows
    failures: list[int] = []

    def down_twice(rows, **kwargs):
        if len(failures) < 2:
            failures.append(len(rows))
            raise OperationalError("connection refused")
        real_insert(rows, **kwargs)

    monkeypatch.setattr(shipper_module, "insert_rows", down_twice)
    monkeypatch.setattr(shipper_module, "RETRY_MIN_SECONDS", 0.001)
    stop = threading.Event()
    shipper = _shipper(log_path, clock)
    # The loop retries; stop it once everything is there.
    original = shipper.ship_available

    def ship_then_stop() -> int:
        consumed = original()
        if RequestLog.objects.count() == len(lines):
            stop.set()
        return consumed

    monkeypatch.setattr(shipper, "ship_available", ship_then_stop)
    shipper.run(stop=stop, poll_seconds=0.001)
    assert failures == [3, 3]  # the same batch each time
    assert _stored_ids() == _ids(lines)


@pytest.mark.postgresql_only  # SQLite stores a NUL in text as it is
def test_a_line_the_database_refuses_is_counted_and_the_batch_stored(nginx_log, log_path, clock):
    good = _lines(3)
    refused = request_line(agent="curl\x00/8")  # escape=json writes \u0000
    nginx_log.write(good[0], refused, *good[1:])
    ship_all(_shipper(log_path, clock))

    assert _stored_ids() == _ids(good)
    assert EdgeLogPosition.objects.get().skipped_lines == 1


@pytest.mark.parametrize(("written", "status"), [(b'"200"', 200), (b'"000"', 0), (b"429", 429)])
def test_a_lines_status_is_read_quoted_as_nginx_writes_it(written, status):
    """nginx writes "s":"$status" quoted: a request that got no status is "000"."""
    line = request_line().replace(b'"s":"200"', b'"s":' + written)
    record, _cache = edge_record(decode_edge_line(line))
    assert record[6] == status
