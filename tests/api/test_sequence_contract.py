"""The HTTP contract of /api/v1/fibonacci/: every documented row, through DRF's test client."""

from __future__ import annotations

import json

import pytest

from fibonacci import sequence as services
from tests.conftest import reference_fibonacci

URL = "/api/v1/fibonacci/"
REFERENCE = reference_fibonacci(30_001)

pytestmark = pytest.mark.django_db


def test_first_five_numbers(client):
    response = client.get(URL, {"n": 5})
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"n": 5, "offset": 0, "sequence": [0, 1, 1, 2, 3]}


@pytest.mark.parametrize(("n", "offset"), [(5, 3), (1, 0), (10, 2_990), (100, 1_234)])
def test_window_from_offset(client, n, offset):
    body = client.get(URL, {"n": n, "offset": offset}).json()
    assert body == {"n": n, "offset": offset, "sequence": REFERENCE[offset : offset + n]}


def test_zero_terms_is_an_empty_sequence(client):
    assert client.get(URL, {"n": 0}).json() == {"n": 0, "offset": 0, "sequence": []}


def test_numbers_are_exact_integers_at_every_size(client, settings):
    settings.FIB_MAX_N = 3_000
    body = json.loads(client.get(URL, {"n": 3_000}).content)
    assert body["sequence"] == REFERENCE[:3_000]
    assert all(type(number) is int for number in body["sequence"])


def test_numbers_as_strings(client):
    body = client.get(URL, {"n": 100, "numbers": "string"}).json()
    assert body["sequence"] == [str(number) for number in REFERENCE[:100]]


@pytest.mark.parametrize(
    "request_kwargs",
    [{"data": {"n": 5, "format": "text"}}, {"data": {"n": 5}, "HTTP_ACCEPT": "text/plain"}],
    ids=["format-param", "accept-header"],
)
def test_text_format(client, request_kwargs):
    response = client.get(URL, **request_kwargs)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response.content == b"0 1 1 2 3\n"


def test_text_of_a_long_window_matches_the_reference(client):
    content = client.get(URL, {"n": 500, "offset": 7, "format": "text"}).content
    assert content.endswith(b"\n")
    assert [int(word) for word in content.split()] == REFERENCE[7:507]


@pytest.mark.parametrize(
    "request_kwargs",
    [{"data": {"n": 5, "format": "api"}}, {"data": {"n": 5}, "HTTP_ACCEPT": "text/html"}],
    ids=["format-param", "accept-header"],
)
def test_browsable_api_page(client, request_kwargs):
    response = client.get(URL, **request_kwargs)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert b"[0,1,1,2,3]" in response.content.replace(b" ", b"")


def test_single_term(client):
    response = client.get(f"{URL}10/")
    assert response.status_code == 200
    assert response.json() == {"index": 10, "value": 55}


def test_single_term_as_text_and_string(client):
    assert client.get(f"{URL}10/", {"format": "text"}).content == b"55\n"
    assert client.get(f"{URL}10/", {"numbers": "string"}).json() == {"index": 10, "value": "55"}


def test_single_term_past_the_str_digit_limit(client):
    # F(20578) is the first term with more than 4,300 digits.
    response = client.get(f"{URL}20578/", {"format": "text"})
    assert response.status_code == 200
    digits = response.content.strip()
    assert len(digits) > 4_300
    assert digits.decode() == _decimal(REFERENCE[20_578])


def test_single_term_json_past_the_digit_limit_is_exact(client):
    content = client.get(f"{URL}25000/").content
    assert content == b'{"index":25000,"value":' + _decimal(REFERENCE[25_000]).encode() + b"}"


def test_leading_zeros_are_accepted(client):
    assert client.get(URL, {"n": "0005", "offset": "003"}).json()["sequence"] == [2, 3, 5, 8, 13]
    assert client.get(f"{URL}0010/").json() == {"index": 10, "value": 55}


def test_head_has_headers_and_no_body(client):
    get = client.get(URL, {"n": 50})
    head = client.head(URL, {"n": 50})
    assert head.status_code == 200
    assert head.content == b""
    assert head["ETag"] == get["ETag"]
    assert head["Content-Type"] == get["Content-Type"]


def _decimal(value: int) -> str:
    """Decimal digits by repeated division: independent of the service's conversion."""
    chunks = []
    while value:
        value, chunk = divmod(value, 10**18)
        chunks.append(f"{chunk:018d}")
    return "".join(reversed(chunks)).lstrip("0") or "0"


@pytest.mark.parametrize(
    "query", [{"format": "json"}, {"format": "json", "numbers": "string"}, {"format": "text"}]
)
def test_a_window_of_many_blocks_is_exact_and_sent_in_pieces(client, settings, query):
    settings.FIB_MAX_N = 3_000
    response = client.get(URL, {"n": 2_900, "offset": 50, **query})
    pieces = list(response)  # what the WSGI server is handed, write by write
    body = b"".join(pieces)
    assert len(pieces) > 3  # the prepared table's blocks, not one joined copy
    assert int(response["Content-Length"]) == len(body)
    if query.get("numbers") == "string":
        assert json.loads(body)["sequence"] == [str(n) for n in REFERENCE[50:2_950]]
    elif query["format"] == "json":
        assert json.loads(body)["sequence"] == REFERENCE[50:2_950]
    else:
        assert [int(number) for number in body.split()] == REFERENCE[50:2_950]
        assert body.endswith(b"\n")


def test_a_small_window_is_one_write_even_across_a_block_boundary(client, settings):
    settings.FIB_MAX_N = 3_000
    numbers = services.sequence_table(3_000).numbers
    # The first item that ends past the first block: a window around it crosses the boundary.
    crossing = next(
        index
        for index in range(3_000)
        if numbers.window_bytes(offset=0, count=index + 1) > services.BLOCK_BYTES
    )
    offset = crossing - 5
    assert len(numbers.window_pieces(offset=offset, count=10)) == 2
    response = client.get(URL, {"n": 10, "offset": offset})
    assert len(list(response)) == 1
    assert response.json()["sequence"] == REFERENCE[offset : offset + 10]
