"""The API through nginx and gunicorn as deployed: contract, errors, headers, limits, static."""

from __future__ import annotations

import gzip
import re
import time

import pytest

from tests.conftest import reference_fibonacci

from .conftest import http_request, new_client_address, wait_for_log

# Low enough to reach in a test, high enough for each test's other requests:
# every test speaks from an address of its own, so budgets never mix.
API_BUDGET = 30
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@pytest.fixture(scope="module")
def app(module_stack_factory):
    """One gunicorn instance (two workers) with a small per-client budget.

    Hourly: a fixed window that ended among a test's requests would let one more through.
    """
    (instance,) = module_stack_factory.start_apps(
        1,
        FIB_RATE_LIMIT=f"{API_BUDGET}/h",
        FIB_RATE_LIMIT_LARGE="5/h",
        FIB_LARGE_N="1000",
    )
    return instance


@pytest.fixture(scope="module", params=[False, True], ids=["no-edge", "edge"])
def nginx(request, module_stack_factory, app):
    """nginx rendered from deploy/nginx.conf with its shipped limits, in front of app.

    Twice: without the edge (the app counts and logs) and with it (nginx counts,
    caches and logs): the same contract holds through both."""
    return module_stack_factory.start_nginx([app], edge=request.param)


# --- The contract -------------------------------------------------------------


def test_sequence_through_nginx_matches_an_independent_computation(nginx, client_address):
    reply = nginx.get("/api/v1/fibonacci/?n=20&offset=5", source=client_address)
    assert reply.status == 200
    assert reply.header("Content-Type") == "application/json"
    assert reply.json() == {"n": 20, "offset": 5, "sequence": reference_fibonacci(25)[5:]}
    assert reply.header("Cache-Control") == "public, max-age=86400"
    assert reply.header("ETag")
    assert re.fullmatch(r"[0-9a-f]{32}", reply.header("X-Request-ID") or "")


@pytest.mark.parametrize(
    ("path", "content_type", "body"),
    [
        ("/api/v1/fibonacci/?n=5&format=text", "text/plain", b"0 1 1 2 3"),
        ("/api/v1/fibonacci/10/", "application/json", b'{"index":10,"value":55}'),
        ("/api/v1/fibonacci/?n=3&numbers=string", "application/json", b'["0","1","1"]'),
    ],
)
def test_formats_through_nginx(nginx, client_address, path, content_type, body):
    reply = nginx.get(path, source=client_address)
    assert reply.status == 200
    assert (reply.header("Content-Type") or "").startswith(content_type)
    assert body in reply.body


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_through_nginx(nginx, client_address, path):
    reply = nginx.get(path, source=client_address)
    assert reply.status == 200
    assert reply.json()["status"] == "ok"


def test_conditional_get_through_nginx_answers_304(nginx, client_address):
    first = nginx.get("/api/v1/fibonacci/?n=50", source=client_address)
    again = nginx.get(
        "/api/v1/fibonacci/?n=50",
        source=client_address,
        headers={"If-None-Match": first.header("ETag")},
    )
    assert again.status == 304
    assert again.body == b""


def test_large_json_is_gzipped_by_nginx_and_still_revalidates(nginx, client_address):
    path = "/api/v1/fibonacci/?n=900"
    reply = nginx.get(path, source=client_address, headers={"Accept-Encoding": "gzip"})
    assert reply.status == 200
    assert reply.header("Content-Encoding") == "gzip"
    assert "Accept-Encoding" in ", ".join(reply.header_values("Vary"))
    body = gzip.decompress(reply.body)
    assert len(reply.body) < len(body) / 2
    assert body.startswith(b'{"n":900,"offset":0,"sequence":[0,1,1,2,')
    # nginx weakens the ETag of what it compresses; a weak match still gives 304.
    etag = reply.header("ETag") or ""
    revalidated = nginx.get(
        path, source=client_address, headers={"Accept-Encoding": "gzip", "If-None-Match": etag}
    )
    assert revalidated.status == 304


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", "/api/v1/fibonacci/?n=-1", {}, 400),
        ("GET", "/api/v1/fibonacci/?n=10001", {}, 400),
        ("GET", "/api/v1/fibonacci/abc/", {}, 400),
        ("GET", "/api/v1/nothing-here/", {}, 404),
        ("POST", "/api/v1/fibonacci/?n=5", {"Content-Type": "application/json"}, 405),
        ("GET", "/api/v1/fibonacci/?n=5", {"Accept": "image/png"}, 406),
    ],
)
def test_errors_through_nginx_are_problem_json(
    nginx, client_address, method, path, headers, status
):
    body = b"{}" if method == "POST" else None
    reply = nginx.get(path, source=client_address, method=method, headers=headers, body=body)
    assert reply.status == status
    assert reply.header("Content-Type") == "application/problem+json"
    assert reply.json()["status"] == status
    assert reply.header("Cache-Control") == "no-store"


@pytest.mark.parametrize("length", [4_000, 4_059, 4_060, 4_061, 4_100, 9_000, 100_000])
def test_huge_query_strings_get_a_4xx_problem(nginx, client_address, length):
    path = "/api/v1/fibonacci/?n=" + "9" * length
    reply = nginx.get(path, source=client_address)
    assert reply.status in (400, 414)
    assert reply.header("Content-Type") == "application/problem+json"
    assert reply.json()["status"] == reply.status


def test_oversized_body_is_refused_by_nginx_before_gunicorn(nginx, app, client_address):
    reply = nginx.get(
        "/api/v1/fibonacci/?n=5&oversized=1",
        source=client_address,
        method="POST",
        headers={"Content-Type": "application/json"},
        body=b"[" + b"1," * 40_000 + b"1]",
    )
    assert reply.status == 413
    assert reply.header("Content-Type") == "application/problem+json"
    assert reply.json()["status"] == 413
    assert "oversized=1" not in app.access_log_text()


@pytest.mark.parametrize(
    "path", ["/api/v1/fibonacci/?n=5", "/api/v1/nothing-here/", "/static/admin/css/base.css"]
)
def test_security_headers_appear_once_and_nginx_hides_its_version(nginx, client_address, path):
    reply = nginx.get(path, source=client_address)
    assert reply.header("Server") == "nginx"
    for name, value in SECURITY_HEADERS.items():
        assert reply.header(name) == value


# --- Static files -----------------------------------------------------------------


def _static_urls(html: bytes) -> list[bytes]:
    return sorted(set(re.findall(rb'(?:href|src)="(/static/[^"?]+)', html)))


@pytest.mark.parametrize("page", ["/admin/login/", "/api/docs/"])
def test_static_files_of_admin_and_swagger_ui_come_from_nginx_with_long_cache(
    nginx, app, client_address, page
):
    html = nginx.get(page, source=client_address)
    assert html.status == 200
    urls = _static_urls(html.body)
    assert urls, f"{page} links no static files"
    for url in urls:
        reply = nginx.get(url.decode(), source=client_address)
        assert reply.status == 200, url
        assert int(reply.header("Cache-Control").removeprefix("max-age=")) >= 7 * 86_400
        assert reply.header("Last-Modified"), "served from disk by nginx"
    assert "/static/" not in app.access_log_text(), "gunicorn must never serve static files"


def test_swagger_ui_bundle_is_served_gzipped(nginx, client_address):
    reply = nginx.get(
        "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js",
        source=client_address,
        headers={"Accept-Encoding": "gzip"},
    )
    assert reply.status == 200
    assert reply.header("Content-Encoding") == "gzip"


# --- Rate limits by the real client address --------------------------------------


def _spend_budget(nginx, source, count, headers_for=lambda i: {}):
    return [
        nginx.get("/api/v1/fibonacci/?n=5", source=source, headers=headers_for(i))
        for i in range(count)
    ]


def test_rate_limit_counts_the_address_nginx_saw(nginx, client_address):
    from .conftest import new_client_address

    replies = _spend_budget(nginx, client_address, API_BUDGET + 1)
    assert [reply.status for reply in replies] == [200] * API_BUDGET + [429]
    limited = replies[-1]
    assert limited.header("Content-Type") == "application/problem+json"
    assert limited.json()["status"] == 429
    assert 1 <= int(limited.header("Retry-After")) <= 3_600
    other = nginx.get("/api/v1/fibonacci/?n=5", source=new_client_address())
    assert other.status == 200, "another address has a budget of its own"


def test_spoofed_forwarding_headers_do_not_change_whose_budget_is_spent(
    nginx, app, e2e_database_url, client_address
):
    def spoofed(i):
        return {"X-Forwarded-For": f"203.0.113.{i}", "X-Real-IP": f"198.51.100.{i}"}

    replies = _spend_budget(nginx, client_address, API_BUDGET + 3, spoofed)
    assert [reply.status for reply in replies] == [200] * API_BUDGET + [429] * 3
    # gunicorn received nginx's X-Real-IP (the real peer), not the client's; asked
    # for a window of this test's own, so that no cached copy (the edge's) answers it.
    probe = new_client_address()
    reply = nginx.get("/api/v1/fibonacci/?n=5&offset=4321", source=probe, headers=spoofed(1))
    assert reply.status == 200
    # gunicorn writes its line after answering: wait for it (2 s at most).
    deadline = time.monotonic() + 2
    while True:
        forwarded = [
            entry["x_real_ip"]
            for entry in app.access_log_entries()
            if entry["query"] == "n=5&offset=4321"
        ]
        if probe in forwarded or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert probe in forwarded
    assert not any(ip.startswith(("203.0.113.", "198.51.100.")) for ip in forwarded)
    # The request log names the real client for every one of them.
    rows = wait_for_log(
        e2e_database_url, client_ip=client_address, done=lambda rows: len(rows) >= len(replies)
    )
    assert sorted(row[2] for row in rows) == sorted(reply.status for reply in replies)


def test_nginx_outer_shield_answers_429_problem_json(module_stack_factory, app, client_address):
    strict = module_stack_factory.start_nginx(
        [app], limit_req_rate="1r/s", limit_req_burst=2, limit_conn=10
    )
    statuses = []
    for _ in range(8):
        reply = strict.get("/healthz", source=client_address)
        statuses.append(reply.status)
        if reply.status == 429:
            assert reply.header("Content-Type") == "application/problem+json"
            assert reply.json()["status"] == 429
            assert reply.header("Retry-After") == "1"
            assert reply.header("X-Content-Type-Options") == "nosniff"
    assert statuses[:3] == [200, 200, 200]
    assert 429 in statuses[3:]
    assert 503 not in statuses
    other = http_request(strict.port, "/healthz", source="127.0.0.1")
    assert other.status == 200, "the shield counts per address"


@pytest.mark.parametrize("via", ["nginx", "gunicorn"])
def test_the_largest_window_arrives_whole_and_exact(nginx, app, client_address, via):
    # Sent by gunicorn as the prepared table's blocks, not as one buffer.
    port = nginx.port if via == "nginx" else app.port
    reference = reference_fibonacci(10_000)

    reply = http_request(port, "/api/v1/fibonacci/?n=10000", source=client_address)
    assert reply.status == 200
    assert reply.header("Content-Length") == str(len(reply.body))
    assert reply.json() == {"n": 10_000, "offset": 0, "sequence": reference}

    path = "/api/v1/fibonacci/?n=6000&offset=4000&format=text"
    text = http_request(port, path, source=client_address)
    assert text.header("Content-Length") == str(len(text.body))
    assert [int(number) for number in text.body.split()] == reference[4_000:]

    head = http_request(port, path, source=new_client_address(), method="HEAD")
    assert head.status == 200
    assert head.body == b""
    assert head.header("Content-Length") == str(len(text.body))


# Every form the app would route to its metrics view (Django decodes the path as nginx does).
@pytest.mark.parametrize("path", ["/metrics", "/metrics?from=nginx", "/%6detrics"])
def test_metrics_are_refused_by_nginx_itself(nginx, app, client_address, path):
    # The test's clients are on loopback, which the app would serve /metrics to.
    reply = nginx.get(path, source=client_address)
    assert reply.status == 404
    assert b"fib_" not in reply.body
    assert "etrics" not in app.access_log_text()
