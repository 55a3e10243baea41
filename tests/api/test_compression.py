"""gzip by the app: API 200s only, bounded in size unless the edge forwarded the request."""

from __future__ import annotations

import gzip

import pytest

URL = "/api/v1/fibonacci/"
# About 105 KB of JSON: far above Django's 200-byte floor, far below the default bound.
LARGE = {"n": 1000}
GZIP = {"HTTP_ACCEPT_ENCODING": "gzip, deflate"}
# What our edge sends: its marker, from an address in FIB_TRUSTED_PROXIES.
EDGE = {
    "REMOTE_ADDR": "10.0.0.5",
    "HTTP_X_REAL_IP": "198.51.100.4",
    # The edge's mark; a stale fingerprint only costs a warning (tests/api/test_edge_mark.py).
    "HTTP_X_FIB_EDGE": "counted 0123456789abcdef",
}

pytestmark = pytest.mark.django_db


@pytest.fixture
def edge_is_trusted(settings):
    settings.FIB_TRUSTED_PROXIES = ["10.0.0.5"]


def vary(response) -> set[str]:
    return {name.strip().lower() for name in response.get("Vary", "").split(",")}


@pytest.mark.parametrize(
    "query", [LARGE, {**LARGE, "format": "text"}, {**LARGE, "numbers": "string"}]
)
def test_gzip_answer_decompresses_to_the_identity_body(client, query):
    identity = client.get(URL, query)
    compressed = client.get(URL, query, **GZIP)
    assert compressed.status_code == 200
    assert compressed["Content-Encoding"] == "gzip"
    assert int(compressed["Content-Length"]) == len(compressed.content) < len(identity.content)
    assert gzip.decompress(compressed.content) == identity.content
    assert compressed["Content-Type"] == identity["Content-Type"]


def test_single_term_is_compressed_too(client):
    identity = client.get(f"{URL}20000/")
    compressed = client.get(f"{URL}20000/", **GZIP)
    assert compressed["Content-Encoding"] == "gzip"
    assert gzip.decompress(compressed.content) == identity.content


def test_compressed_and_identity_answers_vary_on_accept_encoding(client):
    compressed = client.get(URL, LARGE, **GZIP)
    identity = client.get(URL, LARGE)
    assert "accept-encoding" in vary(compressed)
    assert "accept-encoding" in vary(identity)
    # The content negotiation's own Vary stays.
    assert "accept" in vary(compressed)


def test_gzip_answer_has_the_weak_form_of_the_identity_etag(client):
    identity = client.get(URL, LARGE)
    compressed = client.get(URL, LARGE, **GZIP)
    assert identity["ETag"].startswith('"')
    assert compressed["ETag"] == "W/" + identity["ETag"]


@pytest.mark.parametrize("accept_encoding", [None, "", "identity", "br", "deflate"])
def test_no_compression_unless_gzip_is_accepted(client, accept_encoding):
    extra = {} if accept_encoding is None else {"HTTP_ACCEPT_ENCODING": accept_encoding}
    response = client.get(URL, LARGE, **extra)
    assert response.status_code == 200
    assert not response.has_header("Content-Encoding")
    assert response.json()["n"] == 1000
    assert response["ETag"].startswith('"')


def test_short_answers_are_sent_as_they_are(client):
    response = client.get(URL, {"n": 10}, **GZIP)
    assert len(response.content) < 200  # Django's floor: not worth compressing
    assert not response.has_header("Content-Encoding")
    assert response.json()["sequence"] == [0, 1, 1, 2, 3, 5, 8, 13, 21, 34]


def test_above_the_bound_a_direct_request_is_sent_uncompressed(client, settings):
    settings.FIB_COMPRESS_MAX_BYTES = 50_000
    response = client.get(URL, LARGE, **GZIP)
    assert int(response["Content-Length"]) > 50_000
    assert not response.has_header("Content-Encoding")
    assert response["ETag"].startswith('"')
    # Not compressed for anyone, so it does not vary by Accept-Encoding.
    assert "accept-encoding" not in vary(response)


def test_at_the_bound_a_direct_request_is_compressed(client, settings):
    size = len(client.get(URL, LARGE).content)
    settings.FIB_COMPRESS_MAX_BYTES = size
    response = client.get(URL, LARGE, **GZIP)
    assert response["Content-Encoding"] == "gzip"
    assert len(gzip.decompress(response.content)) == size


def test_through_the_edge_any_size_is_compressed(client, settings, edge_is_trusted):
    settings.FIB_COMPRESS_MAX_BYTES = 1_000
    identity = client.get(URL, LARGE, **EDGE)
    response = client.get(URL, LARGE, **GZIP, **EDGE)
    assert response["Content-Encoding"] == "gzip"
    assert gzip.decompress(response.content) == identity.content


def test_through_the_edge_a_large_body_is_compressed_fast_with_the_same_headers(
    client, settings, edge_is_trusted
):
    """Past the bound: zlib level 1 (gzip's header says so), and GZipMiddleware's headers."""
    settings.FIB_COMPRESS_MAX_BYTES = 1_000
    small = client.get(URL, {"n": "70"}, **GZIP, **EDGE)  # about 700 bytes
    large = client.get(URL, LARGE, **GZIP, **EDGE)
    identity = client.get(URL, LARGE, **EDGE)

    # Byte 8 of a gzip header: 4 for the fastest compression, 0 or 2 otherwise.
    assert large.content[8] == 4
    assert gzip.decompress(large.content) == identity.content
    assert int(large["Content-Length"]) == len(large.content)
    assert large["ETag"] == "W/" + identity["ETag"]
    assert "Accept-Encoding" in large["Vary"] and "Accept-Encoding" in identity["Vary"]
    assert small["Content-Encoding"] == "gzip" and small.content[8] != 4


def test_edge_marker_from_an_untrusted_peer_keeps_the_bound(client, settings, edge_is_trusted):
    settings.FIB_COMPRESS_MAX_BYTES = 1_000
    response = client.get(URL, LARGE, **GZIP, **{**EDGE, "REMOTE_ADDR": "203.0.113.7"})
    assert not response.has_header("Content-Encoding")


def test_if_none_match_with_the_weak_etag_gives_304(client):
    weak = client.get(URL, LARGE, **GZIP)["ETag"]
    assert weak.startswith("W/")
    response = client.get(URL, LARGE, HTTP_IF_NONE_MATCH=weak, **GZIP)
    assert response.status_code == 304
    assert response.content == b""
    # The 304 carries the validator of the 200 it stands for.
    assert response["ETag"] == weak
    assert "accept-encoding" in vary(response)


def test_if_none_match_with_the_strong_etag_keeps_it_strong(client):
    strong = client.get(URL, LARGE)["ETag"]
    response = client.get(URL, LARGE, HTTP_IF_NONE_MATCH=strong)
    assert response.status_code == 304
    assert response["ETag"] == strong


def test_if_match_compares_strongly_so_the_weak_etag_fails(client):
    weak = client.get(URL, LARGE, **GZIP)["ETag"]
    strong = weak.removeprefix("W/")
    assert client.get(URL, LARGE, HTTP_IF_MATCH=weak, **GZIP).status_code == 412
    assert client.get(URL, LARGE, HTTP_IF_MATCH=strong, **GZIP).status_code == 200


def test_head_has_the_compressed_answers_headers_and_no_body(client):
    get = client.get(URL, LARGE, **GZIP)
    head = client.head(URL, LARGE, **GZIP)
    assert head.status_code == 200
    assert head.content == b""
    assert head["Content-Encoding"] == "gzip"
    assert head["ETag"] == get["ETag"]
    assert "accept-encoding" in vary(head)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        (f"{URL}?n=1&n=2&offset=-1&numbers=roman&format=json", 400),
        (f"{URL}?n=abc&offset=zzz", 400),
        ("/api/nowhere/" + "x" * 300, 404),
    ],
)
def test_errors_are_sent_uncompressed(client, path, status):
    response = client.get(path, **GZIP)
    assert response.status_code == status
    assert len(response.content) >= 200  # above Django's floor: kept whole by the rule
    assert response["Content-Type"] == "application/problem+json"
    assert not response.has_header("Content-Encoding")
    assert response.json()["status"] == status


def test_only_api_answers_are_compressed(client):
    # The admin and the probes are nginx's to compress, as before.
    response = client.get("/admin/login/", **GZIP)
    assert response.status_code == 200
    assert len(response.content) > 200
    assert not response.has_header("Content-Encoding")
