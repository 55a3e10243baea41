"""An unexpected exception under /api/ takes Django's own 500 path; the client gets a problem."""

from __future__ import annotations

import logging

import pytest
from django.core.signals import got_request_exception
from django.test import Client

from fibonacci import sequence

URL = "/api/v1/fibonacci/"


@pytest.fixture
def exploding_service(monkeypatch):
    """The service layer fails as a bug would."""

    def explode(**kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(sequence, "sequence_window", explode)


@pytest.fixture
def signalled():
    """The exceptions Django's got_request_exception signal announced."""
    seen: list[BaseException | None] = []

    def receiver(sender, request=None, **kwargs):
        import sys

        seen.append(sys.exc_info()[1])

    got_request_exception.connect(receiver)
    yield seen
    got_request_exception.disconnect(receiver)


@pytest.mark.usefixtures("exploding_service")
def test_unexpected_error_reaches_the_signal_and_the_request_logger(signalled, caplog):
    client = Client(raise_request_exception=False)
    with caplog.at_level(logging.ERROR, logger="django.request"):
        response = client.get(URL, {"n": 5})
    assert [type(exc) for exc in signalled] == [RuntimeError]
    [record] = [r for r in caplog.records if r.name == "django.request"]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError
    assert response.status_code == 500
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 500
    assert "secret" not in response.content.decode()


@pytest.mark.usefixtures("exploding_service")
def test_test_clients_see_the_exception_itself():
    # Django's test client re-raises what reached the 500 path: proof that it got there.
    with pytest.raises(RuntimeError, match="secret internal detail"):
        Client().get(URL, {"n": 5})
