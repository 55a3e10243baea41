"""/metrics: who may read it, what it counts, bounded labels, and promtool's verdict on it.

In-process (Django's test client): the registry is this process's own, so
counts are read as differences before and after. Several gunicorn workers
adding up are tested in tests/e2e/test_metrics_prometheus.py.
"""

from __future__ import annotations

import secrets
import subprocess

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from fibonacci.ratelimit import budgets
from requestlog import buffer as request_log
from tests.conftest import redis_caches, require_program

URL = "/api/v1/fibonacci/"
LIST_VIEW = "fibonacci:fibonacci-list"
RESPONSES = "django_http_responses_total_by_status_view_method_total"

pytestmark = pytest.mark.django_db


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _metrics_text(client, remote_addr="127.0.0.1", **extra):
    response = client.get("/metrics", REMOTE_ADDR=remote_addr, **extra)
    assert response.status_code == 200, response.status_code
    assert response["Content-Type"].startswith("text/plain")
    assert response["Cache-Control"] == "no-store"
    return response.content.decode()


@pytest.fixture(autouse=True)
def _no_outage_memory():
    budgets._Outage.until = 0.0
    yield
    budgets._Outage.until = 0.0


@pytest.mark.parametrize("remote_addr", ["127.0.0.1", "::1", "127.8.9.10"])
def test_loopback_clients_read_metrics(client, remote_addr):
    assert "django_http_responses_total_by_status_view_method" in _metrics_text(client, remote_addr)


@pytest.mark.parametrize("remote_addr", ["203.0.113.7", "10.0.0.5", "2001:db8::1"])
def test_other_clients_get_404(client, remote_addr):
    assert client.get("/metrics", REMOTE_ADDR=remote_addr).status_code == 404


def test_the_configured_networks_read_metrics(client, settings):
    settings.FIB_METRICS_ALLOWED = ["10.0.0.0/8", "2001:db8::/32"]
    _metrics_text(client, "10.1.2.3")
    _metrics_text(client, "2001:db8::7")
    assert client.get("/metrics", REMOTE_ADDR="11.0.0.1").status_code == 404


def test_a_public_client_through_our_proxy_gets_404(client, settings):
    settings.FIB_TRUSTED_PROXIES = ["127.0.0.1"]
    reply = client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_REAL_IP="203.0.113.7")
    assert reply.status_code == 404
    # An operator's own request relayed by the proxy is the operator's.
    _metrics_text(client, "127.0.0.1", HTTP_X_REAL_IP="127.0.0.1")


def test_a_request_relayed_by_an_untrusted_proxy_gets_404(client, settings):
    # An nginx on this host that FIB_TRUSTED_PROXIES does not name: everything it
    # forwards arrives from loopback, and must not read the metrics.
    settings.FIB_TRUSTED_PROXIES = []
    reply = client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_REAL_IP="127.0.0.1")
    assert reply.status_code == 404


def test_metrics_switched_off_answer_404(client, settings):
    settings.FIB_METRICS = False
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 404


def test_answers_are_counted_by_view_method_and_status(client):
    before_ok = _sample(RESPONSES, status="200", view=LIST_VIEW, method="GET")
    before_bad = _sample(RESPONSES, status="400", view=LIST_VIEW, method="GET")
    for _ in range(4):
        assert client.get(URL, {"n": 5}).status_code == 200
    assert client.get(URL, {"n": -1}).status_code == 400
    assert _sample(RESPONSES, status="200", view=LIST_VIEW, method="GET") == before_ok + 4
    assert _sample(RESPONSES, status="400", view=LIST_VIEW, method="GET") == before_bad + 1
    latency = "django_http_requests_latency_seconds_by_view_method_count"
    assert _sample(latency, view=LIST_VIEW, method="GET") >= before_ok + 5


def test_labels_hold_no_raw_path_query_or_address(client):
    marker = secrets.token_hex(8)
    client.get(f"/api/v1/no-such-{marker}", REMOTE_ADDR="198.51.100.77")
    client.get(URL, {"n": 5, "q": marker}, REMOTE_ADDR="198.51.100.77")
    client.generic(f"BREW{marker[:4].upper()}", URL)
    text = _metrics_text(client)
    assert marker not in text
    assert marker[:4].upper() not in text
    assert "198.51.100.77" not in text
    assert 'method="<invalid method>"' in text
    assert 'view="<unnamed view>"' in text or 'view="fibonacci.api.errors.not_found"' in text


def test_429s_are_counted(client, settings):
    settings.FIB_RATE_LIMIT = "2/h"
    address = "203.0.113.42"
    before = _sample(RESPONSES, status="429", view=LIST_VIEW, method="GET")
    statuses = [client.get(URL, {"n": 5}, REMOTE_ADDR=address).status_code for _ in range(5)]
    assert statuses == [200, 200, 429, 429, 429]
    assert _sample(RESPONSES, status="429", view=LIST_VIEW, method="GET") == before + 3


@pytest.mark.parametrize(
    ("fail_closed", "mode", "decision"), [(False, "open", "allowed"), (True, "closed", "refused")]
)
def test_limiter_outages_are_counted(
    client, settings, closed_port_url, fail_closed, mode, decision
):
    settings.CACHES = redis_caches(closed_port_url)
    settings.FIB_RATE_LIMIT_FAIL_CLOSED = fail_closed
    outages = _sample("fib_ratelimit_outages_total", mode=mode)
    unchecked = _sample("fib_ratelimit_unchecked_requests_total", decision=decision)
    statuses = {client.get(URL, {"n": 5}).status_code for _ in range(3)}
    assert statuses == ({503} if fail_closed else {200})
    # One failure opens an outage interval; its requests are not counted again.
    assert _sample("fib_ratelimit_outages_total", mode=mode) == outages + 1
    assert _sample("fib_ratelimit_unchecked_requests_total", decision=decision) == unchecked + 3


def test_request_log_buffer_is_in_the_metrics(client):
    for _ in range(3):
        client.get(URL, {"n": 5})
    families = {f.name: f for f in text_string_to_metric_families(_metrics_text(client))}
    (buffered,) = families["fib_request_log_buffered"].samples
    assert buffered.value == request_log.stats()["buffered"] >= 3
    written_before = families["fib_request_log_written"].samples[0].value
    flushed = request_log.flush()
    families = {f.name: f for f in text_string_to_metric_families(_metrics_text(client))}
    assert families["fib_request_log_written"].samples[0].value == written_before + flushed
    assert families["fib_request_log_buffered"].samples[0].value == 0


def test_the_prepared_table_is_in_the_metrics(client, settings):
    families = {f.name: f for f in text_string_to_metric_families(_metrics_text(client))}
    assert families["fib_sequence_table_terms"].samples[0].value == settings.FIB_MAX_N
    assert families["fib_sequence_table_bytes"].samples[0].value > 0


def test_the_exposition_passes_promtool(client):
    promtool = require_program("promtool")
    client.get(URL, {"n": 5})
    client.get(URL, {"n": -1})
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=_metrics_text(client).encode(),
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
