"""The request log's writer thread: on time, on size, on shutdown, and through a database outage."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from django.db import OperationalError
from rest_framework.test import APIClient

from requestlog import buffer as requestlog
from requestlog import writer
from requestlog.buffer import RequestLogBuffer
from requestlog.models import RequestLog
from requestlog.rows import RawRecord, RecordParser
from requestlog.spool import RequestLogSpool

URL = "/api/v1/fibonacci/"


@pytest.fixture
def install_buffer():
    """Install a buffer built from the test's arguments; stop it and restore the old one after."""
    installed = []

    def install(**options):
        buffer = RequestLogBuffer(**options)
        installed.append(requestlog.replace_buffer(buffer))
        return buffer

    yield install
    if installed:
        requestlog.shutdown(timeout_seconds=5)
        requestlog.replace_buffer(installed[0])


def _wait_for_rows(count, *, within_seconds):
    deadline = time.monotonic() + within_seconds
    while RequestLog.objects.count() < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return RequestLog.objects.count()


def _get(client, n=1):
    response = client.get(URL, {"n": str(n)})
    assert response.status_code == 200
    return response["X-Request-ID"]


@pytest.mark.django_db(transaction=True)
def test_writer_flushes_on_time(install_buffer):
    install_buffer(capacity=100, batch_size=100, flush_seconds=0.5, background=True)
    started = time.monotonic()
    _get(APIClient())
    assert RequestLog.objects.count() == 0  # not written by the request itself
    assert _wait_for_rows(1, within_seconds=3) == 1
    assert time.monotonic() - started >= 0.4


@pytest.mark.django_db(transaction=True)
def test_writer_flushes_on_size_before_the_interval(install_buffer):
    install_buffer(capacity=100, batch_size=5, flush_seconds=60, background=True)
    client = APIClient()
    for n in range(4):
        _get(client, n)
    time.sleep(0.3)
    assert RequestLog.objects.count() == 0  # below the batch size, the interval is far off
    _get(client, 4)
    # Read only once the writer is done: SQLite's shared-cache test database
    # refuses a write while another connection reads the table.
    time.sleep(0.3)
    assert _wait_for_rows(5, within_seconds=3) == 5


@pytest.mark.django_db(transaction=True)
def test_shutdown_writes_everything_and_stops_the_thread(install_buffer):
    buffer = install_buffer(capacity=100, batch_size=100, flush_seconds=60, background=True)
    client = APIClient()
    ids = {_get(client, n) for n in range(7)}
    assert RequestLog.objects.count() == 0
    requestlog.shutdown(timeout_seconds=5)
    assert set(RequestLog.objects.values_list("request_id", flat=True)) == ids
    assert buffer.buffered == 0
    assert not any(t.name == "request-log-writer" for t in threading.enumerate())


@pytest.mark.django_db(transaction=True)
def test_records_wait_while_the_database_is_down_and_are_written_when_it_is_back(
    install_buffer, monkeypatch
):
    buffer = install_buffer(capacity=100, batch_size=100, flush_seconds=0.1, background=True)
    real_insert_rows = writer.insert_rows
    database = {"up": False}

    def insert_rows(rows, **kwargs):
        if not database["up"]:
            raise OperationalError("could not connect to server: Connection refused")
        return real_insert_rows(rows, **kwargs)

    monkeypatch.setattr(writer, "insert_rows", insert_rows)
    client = APIClient()
    ids = {_get(client, n) for n in range(3)}
    time.sleep(0.4)  # several failed flushes
    assert RequestLog.objects.count() == 0
    assert requestlog.stats() == {"buffered": 3, "dropped": 0, "rejected": 0}
    database["up"] = True
    assert _wait_for_rows(3, within_seconds=3) == 3
    assert set(RequestLog.objects.values_list("request_id", flat=True)) == ids
    assert buffer.buffered == 0


@pytest.mark.django_db
def test_past_the_bound_the_oldest_are_dropped_counted_and_logged(
    install_buffer, monkeypatch, caplog
):
    install_buffer(capacity=3, batch_size=100, flush_seconds=60, background=False)
    client = APIClient()
    ids = [_get(client, n) for n in range(5)]
    assert requestlog.stats() == {"buffered": 3, "dropped": 2, "rejected": 0}
    with caplog.at_level(logging.WARNING, logger="requestlog.buffer"):
        assert requestlog.flush() == 3
    assert list(RequestLog.objects.order_by("id").values_list("request_id", flat=True)) == ids[2:]
    assert any("dropped 2 records" in message for message in caplog.messages)


@pytest.mark.django_db
def test_a_failed_batch_is_kept_and_retried_first(install_buffer, monkeypatch):
    install_buffer(capacity=100, batch_size=2, flush_seconds=60, background=False)
    client = APIClient()
    ids = [_get(client, n) for n in range(3)]
    real_insert_rows = writer.insert_rows

    def refuse(*args, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(writer, "insert_rows", refuse)
    assert requestlog.flush() == 0
    assert requestlog.stats()["buffered"] == 3
    monkeypatch.setattr(writer, "insert_rows", real_insert_rows)
    assert requestlog.flush() == 3
    assert list(RequestLog.objects.order_by("id").values_list("request_id", flat=True)) == ids


def _spool(tmp_path, *, max_bytes=1_000_000, records_per_file=100):
    return RequestLogSpool(
        directory=tmp_path / "spool", max_bytes=max_bytes, records_per_file=records_per_file
    )


def _stored_ids():
    return sorted(RequestLog.objects.values_list("request_id", flat=True))


def _refuse(*args, **kwargs):
    raise OperationalError("could not connect to server: Connection refused")


@pytest.mark.django_db
def test_a_batch_written_twice_is_stored_once():
    client = APIClient()
    buffer = requestlog.replace_buffer(
        RequestLogBuffer(capacity=100, batch_size=100, flush_seconds=60, background=False)
    )
    try:
        ids = [_get(client, n) for n in range(4)]
        records = list(requestlog.current_buffer()._records)
    finally:
        requestlog.replace_buffer(buffer)
    rows = RecordParser.from_settings().rows(records)
    writer.insert_rows(rows[:2])
    writer.insert_rows(rows)  # a retry of a batch whose first half was committed
    assert _stored_ids() == sorted(ids)


@pytest.mark.django_db
def test_stop_with_the_database_down_spools_and_a_later_writer_writes_each_once(
    install_buffer, monkeypatch, tmp_path
):
    spool = _spool(tmp_path, records_per_file=2)
    install_buffer(capacity=100, batch_size=100, flush_seconds=60, background=False, spool=spool)
    client = APIClient()
    ids = [_get(client, n) for n in range(5)]
    monkeypatch.setattr(writer, "insert_rows", _refuse)
    requestlog.shutdown(timeout_seconds=1)
    counts = requestlog.stats()
    assert (counts["buffered"], counts["dropped"], counts["spilled"]) == (0, 0, 5)
    assert counts["spool_files"] == 3  # two records a file
    assert RequestLog.objects.count() == 0
    monkeypatch.undo()

    later = RequestLogBuffer(
        capacity=100, batch_size=100, flush_seconds=60, background=False, spool=_spool(tmp_path)
    )
    assert later._drain_spool() == 5
    assert _stored_ids() == sorted(ids)
    assert spool.stats() == {"spool_files": 0, "spool_bytes": 0}


@pytest.mark.django_db
def test_a_spool_file_written_again_adds_no_rows(install_buffer, monkeypatch, tmp_path):
    spool = _spool(tmp_path)
    client = APIClient()
    buffer = install_buffer(
        capacity=100, batch_size=100, flush_seconds=60, background=False, spool=spool
    )
    ids = [_get(client, n) for n in range(3)]
    records = list(buffer._records)
    assert requestlog.flush() == 3  # written ...
    spool.spill(records)  # ... and spooled as well, as by a writer that gave up on it
    assert buffer._drain_spool() == 3
    assert _stored_ids() == sorted(ids)


@pytest.mark.django_db(transaction=True)
def test_a_writer_stuck_on_the_database_is_not_waited_for_and_nothing_is_lost(
    install_buffer, monkeypatch, tmp_path
):
    spool = _spool(tmp_path)
    buffer = install_buffer(
        capacity=100, batch_size=2, flush_seconds=0.05, background=True, spool=spool
    )
    real_insert_rows = writer.insert_rows
    release = threading.Event()
    stuck = threading.Event()

    def hang(rows, **kwargs):
        stuck.set()
        release.wait(10)  # a frozen server: the query neither fails nor returns
        return real_insert_rows(rows, **kwargs)

    monkeypatch.setattr(writer, "insert_rows", hang)
    client = APIClient()
    ids = [_get(client, n) for n in range(5)]
    assert stuck.wait(3)
    started = time.monotonic()
    requestlog.shutdown(timeout_seconds=0.3)
    assert time.monotonic() - started < 1.0
    assert buffer.buffered == 0
    assert buffer.spilled == 5  # the batch being written too
    release.set()  # the stuck batch commits after all ...
    monkeypatch.setattr(writer, "insert_rows", real_insert_rows)
    deadline = time.monotonic() + 5
    while RequestLog.objects.count() < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    buffer._drain_spool()  # ... and is read back from the spool: still once each
    assert _stored_ids() == sorted(ids)


@pytest.mark.django_db
def test_half_the_buffer_waiting_in_an_outage_moves_to_the_spool(
    install_buffer, monkeypatch, tmp_path
):
    spool = _spool(tmp_path)
    install_buffer(capacity=10, batch_size=2, flush_seconds=60, background=False, spool=spool)
    monkeypatch.setattr(writer, "insert_rows", _refuse)
    client = APIClient()
    ids = [_get(client, n) for n in range(14)]  # more than the buffer holds
    requestlog.flush()  # fails: the batch stays pending, the other 12 go to disk
    counts = requestlog.stats()
    assert (counts["buffered"], counts["dropped"], counts["spilled"]) == (2, 4, 8)
    assert counts["spool_files"] == 1
    monkeypatch.undo()
    assert requestlog.flush() == 2
    assert requestlog.current_buffer()._drain_spool() == 8
    assert _stored_ids() == sorted(ids[4:])  # the 4 over the bound were dropped before


@pytest.mark.django_db
def test_a_full_spool_drops_counts_and_warns_once_per_interval(
    install_buffer, monkeypatch, tmp_path, caplog
):
    spool = _spool(tmp_path, max_bytes=600, records_per_file=100)
    buffer = install_buffer(
        capacity=100, batch_size=100, flush_seconds=60, background=False, spool=spool
    )
    monkeypatch.setattr(writer, "insert_rows", _refuse)
    client = APIClient()
    for n in range(6):
        _get(client, n)
    with caplog.at_level(logging.WARNING, logger="requestlog.buffer"):
        requestlog.shutdown(timeout_seconds=1)
        for n in range(6):
            _get(client, n)
        requestlog.shutdown(timeout_seconds=1)
    assert 0 < buffer.spilled < 12
    assert buffer.dropped == 12 - buffer.spilled
    assert spool.size_bytes() <= 600
    assert len([m for m in caplog.messages if "full (" in m]) == 1


def test_spool_files_appear_whole_and_half_written_ones_are_not_read(tmp_path):
    spool = _spool(tmp_path)
    record = (1.0, 2.0, "GET", "fibonacci-list", None, "n=1", 200, "192.0.2.1", "ua", 10, "r1")
    assert spool.spill([record]).spilled == 1
    names = [path.name for path in spool.directory.iterdir()]
    assert len(names) == 1 and names[0].endswith(".jsonl")
    (spool.directory / ".incoming-0-1-000001.jsonl").write_text('[1.0, "half')
    read: list[RawRecord] = []
    assert spool.drain(read.extend, max_files=10) == 1
    assert read == [record]


@pytest.mark.django_db(transaction=True)
def test_records_behind_a_stuck_writer_go_to_the_spool_not_over_the_bound(
    install_buffer, monkeypatch, tmp_path
):
    spool = _spool(tmp_path)
    buffer = install_buffer(
        capacity=10, batch_size=2, flush_seconds=0.05, background=True, spool=spool
    )
    monkeypatch.setattr(requestlog, "STUCK_WRITE_SECONDS", 0.2)
    real_insert_rows = writer.insert_rows
    release = threading.Event()
    stuck = threading.Event()

    def hang(rows, **kwargs):
        stuck.set()
        release.wait(10)
        return real_insert_rows(rows, **kwargs)

    monkeypatch.setattr(writer, "insert_rows", hang)
    client = APIClient()
    ids = [_get(client, 0)]
    assert stuck.wait(3)
    time.sleep(0.3)  # the write has run past STUCK_WRITE_SECONDS
    ids += [_get(client, n) for n in range(1, 30)]  # three times what the buffer holds
    assert buffer.dropped == 0
    assert buffer.spilled >= 20
    release.set()
    monkeypatch.setattr(writer, "insert_rows", real_insert_rows)
    requestlog.shutdown(timeout_seconds=5)
    while buffer._drain_spool():
        pass
    assert _stored_ids() == sorted(ids)


def _record(rid: str, **changes: object) -> RawRecord:
    """A raw record as the middleware captures it, request id rid, with some fields changed."""
    fields: dict[str, object] = {
        "arrived": time.time(),
        "duration_ms": 1.5,
        "method": "GET",
        "url_name": "fibonacci-list",
        "index": None,
        "query": "n=1",
        "status": 200,
        "ip": "192.0.2.1",
        "agent": "curl/8.5",
        "size": 41,
        "request_id": rid,
    }
    fields.update(changes)
    return tuple(fields.values())  # type: ignore[return-value]


# Values a column refuses, on every retry (SQLite stores the last two as they are).
POISONS: dict[str, dict[str, object]] = {
    "negative size (CHECK violation)": {"size": -1},
    "NUL in the user agent": {"agent": "curl\x00/8.5"},
    "request id longer than its column": {"request_id": "p" * 65},
}
_ONLY_POSTGRESQL_REFUSES = {"NUL in the user agent", "request id longer than its column"}


def _poisoned(name: str) -> RawRecord:
    return _record("poisoned", **POISONS[name])


@pytest.mark.django_db
@pytest.mark.parametrize(
    "poison",
    [
        pytest.param(
            name,
            marks=[pytest.mark.postgresql_only] if name in _ONLY_POSTGRESQL_REFUSES else [],
        )
        for name in POISONS
    ],
)
def test_a_batch_with_a_poisoned_row_writes_the_others_and_counts_it_rejected(
    install_buffer, poison, caplog, client
):
    buffer = install_buffer(capacity=100, batch_size=100, flush_seconds=60, background=False)
    poisoned = _poisoned(poison)
    good = [f"good-{n}" for n in range(4)]
    for record in [_record(good[0]), _record(good[1]), poisoned, _record(good[2])]:
        buffer.append(record)
    with caplog.at_level(logging.WARNING, logger="requestlog.buffer"):
        assert requestlog.flush() == 3
        buffer.append(_record(good[3]))  # the log goes on: the bad row is not retried
        assert requestlog.flush() == 1
    assert _stored_ids() == sorted(good)
    counts = requestlog.stats()
    assert (counts["buffered"], counts["dropped"], counts["rejected"]) == (0, 0, 1)
    assert client.get("/readyz").json()["request_log"]["rejected"] == 1
    assert [m for m in caplog.messages if "rejected" in m]


@pytest.mark.django_db
def test_rejections_are_logged_once_per_interval_and_all_counted(install_buffer, caplog):
    buffer = install_buffer(capacity=100, batch_size=2, flush_seconds=60, background=False)
    for n in range(3):
        buffer.append(_record(f"good-{n}"))
        buffer.append(_record(f"bad-{n}", size=-1))
    with caplog.at_level(logging.WARNING, logger="requestlog.buffer"):
        assert requestlog.flush() == 3  # three batches of two, each with one bad row
    assert _stored_ids() == ["good-0", "good-1", "good-2"]
    assert buffer.rejected == 3
    assert len([m for m in caplog.messages if "rejected" in m]) == 1


@pytest.mark.django_db
def test_a_connection_lost_while_writing_row_by_row_keeps_the_batch_for_a_retry(
    install_buffer, monkeypatch
):
    buffer = install_buffer(capacity=100, batch_size=100, flush_seconds=60, background=False)
    for record in [_record("good-0"), _record("bad", size=-1), _record("good-1")]:
        buffer.append(record)
    real_insert_rows = writer.insert_rows
    calls = []

    def lost_after_the_first_row(rows, **kwargs):
        calls.append(len(rows))
        if len(calls) > 2:  # the batch, then its first row, then the connection is gone
            raise OperationalError("server closed the connection unexpectedly")
        return real_insert_rows(rows, **kwargs)

    monkeypatch.setattr(writer, "insert_rows", lost_after_the_first_row)
    assert requestlog.flush() == 0
    assert (buffer.buffered, buffer.rejected) == (3, 0)  # nothing given up on an outage
    assert _stored_ids() == ["good-0"]
    monkeypatch.setattr(writer, "insert_rows", real_insert_rows)
    assert requestlog.flush() == 2  # good-0 was stored already: skipped by its request id
    assert _stored_ids() == ["good-0", "good-1"]
    assert (buffer.buffered, buffer.rejected) == (0, 1)


@pytest.mark.django_db
def test_a_spooled_file_with_a_poisoned_row_is_written_and_removed(install_buffer, tmp_path):
    spool = _spool(tmp_path)
    buffer = install_buffer(
        capacity=100, batch_size=100, flush_seconds=60, background=False, spool=spool
    )
    spool.spill([_record("good-0"), _record("bad", size=-1), _record("good-1")])
    spool.spill([_record("good-2")])  # behind it: must not wait forever
    assert buffer._drain_spool() == 3
    assert _stored_ids() == ["good-0", "good-1", "good-2"]
    assert buffer.rejected == 1
    assert spool.stats() == {"spool_files": 0, "spool_bytes": 0}
