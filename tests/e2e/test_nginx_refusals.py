"""What nginx refuses itself, and what a refusal costs the logs, through real nginx and gunicorn.

Unknown host names never reach gunicorn; nginx's own errors (a bad escape,
TRACE, an unknown transfer coding, HTTP/2.0 on the request line, ...) are
problem details like the API's; nginx listens on IPv6 loopback too; and
answers the client caused (429s, a disallowed Host) cost gunicorn's log no
line each, or one short line.
"""

from __future__ import annotations

import json
import secrets
import socket
import time
from dataclasses import dataclass

import pytest

from deploy import nginx as deploy_nginx
from tests.conftest import reference_fibonacci

from .conftest import GENEROUS_NGINX, http_request, new_client_address

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
}


@dataclass
class RawReply:
    """An HTTP answer read off a socket: status, headers (lower-case names), body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def problem(self) -> dict:
        """The body as problem details, after checking the media type."""
        assert self.headers.get("content-type") == "application/problem+json", self.headers
        body: dict = json.loads(self.body)
        return body


def raw_exchange(
    port: int,
    data: bytes,
    *,
    host: str = "127.0.0.1",
    source: str | None = None,
    timeout_seconds: float = 15.0,
) -> RawReply | None:
    """Send data as is and read until nginx closes; None when it closed without an answer."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as connection:
        connection.settimeout(timeout_seconds)
        if source:
            connection.bind((source, 0))
        connection.connect((host, port))
        connection.sendall(data)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    if not received:
        return None
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawReply(int(status_line.split()[1]), headers, body)


@pytest.fixture(scope="module")
def app(module_stack_factory):
    """One gunicorn instance, one worker, one API request an hour per client (hourly: a
    window ending among a test's requests would let one more through)."""
    (instance,) = module_stack_factory.start_apps(
        1, workers=1, FIB_RATE_LIMIT="1/h", FIB_RATE_LIMIT_LARGE="1/h"
    )
    return instance


@pytest.fixture(scope="module")
def nginx(module_stack_factory, app):
    """nginx as shipped in front of app, its shield opened wide so that only the app limits."""
    return module_stack_factory.start_nginx([app], **GENEROUS_NGINX)


def _gunicorn_output(module_stack_factory, app) -> str:
    """What gunicorn and Django wrote to stderr so far (gunicorn's error log, Django's LOGGING)."""
    path = module_stack_factory.workdir / f"gunicorn-{app.port}.out"
    return path.read_text() if path.exists() else ""


def _reached_gunicorn(app, marker: str) -> bool:
    """Whether a request whose URL holds marker is in gunicorn's access log."""
    return marker in app.access_log_text()


def _sync_access_log(nginx, app) -> None:
    """A request that reaches gunicorn, then a moment: earlier lines are in its log by now."""
    marker = secrets.token_hex(6)
    assert nginx.get(f"/healthz?sync={marker}").status == 200
    deadline = time.monotonic() + 5
    while not _reached_gunicorn(app, marker):
        assert time.monotonic() < deadline, "gunicorn's access log is not being written"
        time.sleep(0.05)


# --- Host names -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_head",
    [
        b"GET /api/v1/fibonacci/?n=3&probe={marker} HTTP/1.1\r\nHost: evil.example\r\n",
        b"GET /api/v1/fibonacci/?n=3&probe={marker} HTTP/1.1\r\nHost: 127.0.0.1.evil\r\n",
        b"GET /api/v1/fibonacci/?n=3&probe={marker} HTTP/1.1\r\nHost: 10.0.0.1:{port}\r\n",
        # The request line's host is the one nginx goes by.
        b"GET http://evil.example/api/v1/fibonacci/?n=3&probe={marker} HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\n",
        # No Host at all (HTTP/1.0 allows it).
        b"GET /api/v1/fibonacci/?n=3&probe={marker} HTTP/1.0\r\n",
    ],
    ids=["foreign", "suffixed", "other-address", "absolute-uri", "no-host"],
)
def test_unknown_host_names_are_refused_by_nginx_and_never_reach_gunicorn(
    module_stack_factory, nginx, app, request_head
):
    marker = secrets.token_hex(6)
    before = _gunicorn_output(module_stack_factory, app)
    head = request_head.replace(b"{marker}", marker.encode()).replace(
        b"{port}", str(nginx.port).encode()
    )

    reply = raw_exchange(nginx.port, head + b"Connection: close\r\n\r\n")

    assert reply is not None
    assert reply.status == 421
    assert reply.problem() == {
        "type": "about:blank",
        "title": "Misdirected Request",
        "status": 421,
        "detail": "This server does not serve that host name.",
    }
    for name, value in SECURITY_HEADERS.items():
        assert reply.headers.get(name) == value
    _sync_access_log(nginx, app)
    assert not _reached_gunicorn(app, marker)
    assert _gunicorn_output(module_stack_factory, app) == before


def test_a_foreign_host_header_behind_our_absolute_uri_never_reaches_django(
    module_stack_factory, nginx, app
):
    # nginx picks the server by the request line's host; what Django sees must be that one.
    before = _gunicorn_output(module_stack_factory, app)
    head = (
        b"GET http://127.0.0.1:%d/api/v1/fibonacci/?n=6 HTTP/1.1\r\nHost: evil.example\r\n"
        % nginx.port
    )

    reply = raw_exchange(nginx.port, head + b"Connection: close\r\n\r\n")

    assert reply is not None and reply.status == 200
    assert json.loads(reply.body)["sequence"] == reference_fibonacci(6)
    _sync_access_log(nginx, app)
    assert _gunicorn_output(module_stack_factory, app) == before


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.0.0.1:{port}", "LOCALHOST"])
def test_the_stacks_own_host_names_are_served(nginx, host):
    reply = nginx.get(
        "/api/v1/fibonacci/5/",
        source=new_client_address(),
        headers={"Host": host.format(port=nginx.port)},
    )
    assert reply.status == 200
    assert reply.json() == {"index": 5, "value": 5}


def test_nginx_listens_on_ipv6_loopback_too(nginx):
    if not deploy_nginx.host_has_ipv6():
        pytest.skip("this host has no IPv6")

    reply = raw_exchange(
        nginx.port,
        b"GET /api/v1/fibonacci/?n=7 HTTP/1.1\r\nHost: [::1]:%d\r\nConnection: close\r\n\r\n"
        % nginx.port,
        host="::1",
    )

    assert reply is not None and reply.status == 200
    assert json.loads(reply.body)["sequence"] == reference_fibonacci(7)


# --- nginx's own errors -----------------------------------------------------------------


def _bad_request(line: bytes, *headers: bytes) -> bytes:
    return line + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"Connection: close\r\n\r\n"


@pytest.mark.parametrize(
    ("data", "status", "title"),
    [
        (_bad_request(b"GET /api/%zz HTTP/1.1", b"Host: 127.0.0.1"), 400, "Bad Request"),
        (_bad_request(b"TRACE /api/v1/ HTTP/1.1", b"Host: 127.0.0.1"), 405, "Method Not Allowed"),
        # TRACE for a host we do not serve: answered by the default server, the same way.
        (_bad_request(b"TRACE /api/v1/ HTTP/1.1", b"Host: evil.test"), 405, "Method Not Allowed"),
        (
            _bad_request(b"GET /api/v1/ HTTP/1.1", b"Host: 127.0.0.1", b"Transfer-Encoding: gzip"),
            501,
            "Not Implemented",
        ),
        (
            _bad_request(b"GET /api/v1/ HTTP/2.0", b"Host: 127.0.0.1"),
            505,
            "HTTP Version Not Supported",
        ),
        (
            _bad_request(b"GET /api/v1/ HTTP/1.1", b"Host: 127.0.0.1", b"X-Big: " + b"a" * 5000),
            400,
            "Bad Request",
        ),
        (
            _bad_request(b"GET /api/v1/fibonacci/?q=" + b"a" * 5000 + b" HTTP/1.1", b"Host: x"),
            414,
            "URI Too Long",
        ),
    ],
    ids=["bad-escape", "trace", "trace-unknown-host", "transfer-coding", "http-2.0", "big-header",
         "long-line"],
)  # fmt: skip
def test_nginx_own_errors_are_problem_details(
    module_stack_factory, nginx, app, data, status, title
):
    before = _gunicorn_output(module_stack_factory, app)

    reply = raw_exchange(nginx.port, data, source=new_client_address())

    assert reply is not None
    assert reply.status == status
    problem = reply.problem()
    assert problem["status"] == status
    assert problem["title"] == title
    assert problem["type"] == "about:blank"
    assert problem["detail"]
    assert reply.headers.get("cache-control") == "no-store"
    for name, value in SECURITY_HEADERS.items():
        assert reply.headers.get(name) == value
    assert _gunicorn_output(module_stack_factory, app) == before


def test_a_body_that_never_comes_is_cut_off_without_an_html_page(nginx):
    """client_body_timeout (10 s): nginx closes the connection, or answers problem details."""
    data = (
        b"POST /admin/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n\r\nusername="
    )

    reply = raw_exchange(nginx.port, data, source=new_client_address(), timeout_seconds=30)

    if reply is not None:
        assert reply.status == 408
        assert reply.problem()["status"] == 408


# --- What client errors cost the log ------------------------------------------------------


def test_rate_limited_requests_cost_gunicorns_log_no_line(module_stack_factory, nginx, app):
    source = new_client_address()
    _sync_access_log(nginx, app)
    before = _gunicorn_output(module_stack_factory, app)

    statuses = [
        http_request(nginx.port, "/api/v1/fibonacci/?n=4", source=source).status for _ in range(200)
    ]
    statuses += [
        http_request(nginx.port, "/api/v1/fibonacci/?n=-4", source=source).status for _ in range(20)
    ]

    assert statuses.count(200) == 1
    assert statuses.count(429) >= 199
    _sync_access_log(nginx, app)
    assert _gunicorn_output(module_stack_factory, app) == before


def test_a_disallowed_host_straight_to_gunicorn_is_one_short_line(module_stack_factory, app):
    """Past nginx (a misconfigured proxy, a scanner on the app port): one line, no traceback."""
    before = _gunicorn_output(module_stack_factory, app)

    reply = raw_exchange(
        app.port, _bad_request(b"GET /api/v1/fibonacci/?n=3 HTTP/1.1", b"Host: evil.example")
    )

    assert reply is not None and reply.status == 400
    deadline = time.monotonic() + 5
    while (new := _gunicorn_output(module_stack_factory, app)[len(before) :]) == "":
        assert time.monotonic() < deadline, "nothing was logged"
        time.sleep(0.05)
    time.sleep(0.3)
    new = _gunicorn_output(module_stack_factory, app)[len(before) :]
    lines = new.splitlines()
    assert len(lines) == 1, new
    assert "django.security.DisallowedHost" in lines[0]
    assert "Traceback" not in new
