"""Bad input gets a clear 4xx in RFC 9457 problem details; never a 500."""

from __future__ import annotations

import pytest
from django.test import Client

from fibonacci import sequence as services

URL = "/api/v1/fibonacci/"

pytestmark = pytest.mark.django_db


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status
    assert response["Content-Type"] == "application/problem+json"
    body: dict = response.json()
    assert body["status"] == status
    assert {"type", "title", "detail"} <= body.keys()
    return body


REJECTED_VALUES = [
    "-1",
    "-0",
    "+5",
    " 5",
    "5 ",
    "5.0",
    "1e3",
    "0x10",
    "1_000",
    "٥",  # ARABIC-INDIC DIGIT FIVE
    "５",  # FULLWIDTH DIGIT FIVE
    "²",  # SUPERSCRIPT TWO: str.isdigit() says yes
    "",
    "five",
    "5\x00",
    "9" * 5_000,
    "1" + "0" * 100,
    "10001",
]


@pytest.mark.parametrize("value", REJECTED_VALUES, ids=repr)
def test_rejected_n(client, settings, value):
    settings.FIB_MAX_N = 10_000
    body = assert_problem(client.get(URL, {"n": value}), 400)
    assert body["errors"]["n"] == ["n must be an integer from 0 to 10000."]
    assert body["detail"] == "n must be an integer from 0 to 10000."


@pytest.mark.parametrize("value", REJECTED_VALUES, ids=repr)
def test_rejected_offset(client, settings, value):
    settings.FIB_MAX_N = 10_000
    body = assert_problem(client.get(URL, {"n": 1, "offset": value}), 400)
    assert body["errors"]["offset"] == ["offset must be an integer from 0 to 10000."]


@pytest.mark.parametrize(
    "value", [v for v in REJECTED_VALUES if v not in {"", "5\x00", "10001"}] + ["100001"], ids=repr
)
def test_rejected_index(client, settings, value):
    settings.FIB_MAX_INDEX = 100_000
    body = assert_problem(client.get(f"{URL}{value}/"), 400)
    assert body["errors"]["index"] == ["index must be an integer from 0 to 100000."]


def test_missing_n(client):
    body = assert_problem(client.get(URL), 400)
    assert body["errors"]["n"] == ["n is required: an integer from 0 to 3000."]


def test_offset_plus_n_over_the_cap_names_the_cap(client):
    body = assert_problem(client.get(URL, {"n": 20, "offset": 2_990}), 400)
    assert "10 when offset is 2990" in body["errors"]["n"][0]
    assert "3000" in body["errors"]["n"][0]


def test_cap_follows_the_setting(client, settings):
    settings.FIB_MAX_N = 50
    assert client.get(URL, {"n": 50}).status_code == 200
    body = assert_problem(client.get(URL, {"n": 51}), 400)
    assert body["detail"] == "n must be an integer from 0 to 50."


def test_index_cap_follows_the_setting(client, settings):
    settings.FIB_MAX_INDEX = 1_000
    assert client.get(f"{URL}1000/").status_code == 200
    assert_problem(client.get(f"{URL}1001/"), 400)


def test_repeated_parameter_is_rejected(client):
    body = assert_problem(client.get(f"{URL}?n=5&n=6"), 400)
    assert body["errors"]["n"] == ["n must be given once."]


def test_unknown_numbers_style(client):
    body = assert_problem(client.get(URL, {"n": 5, "numbers": "float"}), 400)
    assert "numbers" in body["errors"]


def test_several_bad_fields_are_all_reported(client):
    body = assert_problem(client.get(URL, {"n": "x", "offset": "y"}), 400)
    assert set(body["errors"]) == {"n", "offset"}


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
@pytest.mark.parametrize("path", [URL, f"{URL}10/"])
def test_write_methods_are_not_allowed(client, method, path):
    response = getattr(client, method)(path, {"n": 5}, format="json")
    assert_problem(response, 405)
    assert set(response["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "OPTIONS"}


def test_unknown_format_is_400_problem_naming_the_formats(client):
    body = assert_problem(client.get(URL, {"n": 5, "format": "xml"}), 400)
    assert body["errors"]["format"] == ["format must be one of: api, json, text."]


@pytest.mark.parametrize("path", [URL, f"{URL}10/"])
def test_empty_format_is_400_problem_naming_the_formats(client, path):
    body = assert_problem(client.get(path, {"n": 5, "format": ""}), 400)
    assert body["errors"]["format"] == ["format must be one of: api, json, text."]


@pytest.mark.parametrize("path", [URL, f"{URL}10/"])
@pytest.mark.parametrize("formats", [["json", "text"], ["text", "text"], ["json", ""]])
def test_repeated_format_is_400_problem_naming_the_formats(client, path, formats):
    body = assert_problem(client.get(path, {"n": 5, "format": formats}), 400)
    assert body["errors"]["format"] == ["format must be given once, as one of: api, json, text."]


def test_unacceptable_accept_header_is_406_problem(client):
    assert_problem(client.get(URL, {"n": 5}, HTTP_ACCEPT="image/png"), 406)


def test_unknown_api_path_is_404_problem(client):
    assert_problem(client.get("/api/v1/nothing-here/"), 404)
    assert_problem(client.get("/api/v2/fibonacci/"), 404)


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/fibonacci.json?n=3",
        "/api/v1/fibonacci/10.json",
        "/api/v1/.json",
        "/api/v1/fibonacci/10/.api",
        "/api/v1/fibonacci/%00/",
        "/api/v1/fibonacci/?n=%00",
        "/api/v1/fibonacci/?n=3" + "&a" * 1_001,
        "/api/v1/fibonacci/?n=3&n",
        "/api/v1/fibonacci//",
        "/api/v1//fibonacci/?n=3",
        "/api/v1/fibonacci/?=3",
    ],
)
def test_ugly_paths_are_answered_without_5xx(client, path):
    response = client.get(path)
    assert response.status_code < 500
    if response.status_code >= 400:
        assert response["Content-Type"] == "application/problem+json"


def test_too_many_query_parameters_is_a_400_problem(client):
    body = assert_problem(client.get("/api/v1/fibonacci/?n=3" + "&a" * 1_001), 400)
    assert "malformed" in body["detail"]


def test_unexpected_failure_is_500_problem_without_internals(monkeypatch):
    def explode(**kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(services, "sequence_window", explode)
    client = Client(raise_request_exception=False)
    body = assert_problem(client.get(URL, {"n": 5}), 500)
    assert "secret" not in body["detail"]
