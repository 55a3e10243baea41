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
    assert requestlog.stats() == {"buffered": 3, "dropped": 0}
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
    assert requestlog.stats() == {"buffered": 3, "dropped": 2}
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
