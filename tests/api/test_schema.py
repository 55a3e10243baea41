"""The served OpenAPI schema declares what the API answers: shapes, media types, bounds."""

from __future__ import annotations

from typing import Any

import pytest

SCHEMA_URL = "/api/schema/?format=json"
LIST = "/api/v1/fibonacci/"
TERM = "/api/v1/fibonacci/{index}/"
FORMATS = ["api", "json", "text"]


@pytest.fixture
def schema(client, settings) -> dict[str, Any]:
    """The schema as served, generated with caps no default has, to see they are read."""
    settings.FIB_MAX_N = 1_234
    settings.FIB_MAX_INDEX = 5_678
    response = client.get(SCHEMA_URL)
    assert response.status_code == 200
    served: dict[str, Any] = response.json()
    return served


def deref(schema: dict[str, Any], node: dict[str, Any]) -> Any:
    """`node` with its local $ref (if any) followed."""
    while "$ref" in node:
        target: Any = schema
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def get(schema: dict[str, Any], path: str) -> Any:
    """The GET operation at `path`."""
    return schema["paths"][path]["get"]


def parameter(schema: dict[str, Any], path: str, name: str) -> Any:
    """The parameter `name` of the GET operation at `path`."""
    (found,) = [p for p in get(schema, path)["parameters"] if p["name"] == name]
    return found


def test_the_list_answer_is_declared_as_the_object_it_is(schema):
    body = deref(
        schema, get(schema, LIST)["responses"]["200"]["content"]["application/json"]["schema"]
    )
    assert body["type"] == "object"
    assert set(body["properties"]) == {"n", "offset", "sequence"}
    assert set(body["required"]) == {"n", "offset", "sequence"}
    assert body["properties"]["sequence"]["type"] == "array"


def test_the_term_answer_is_declared_as_an_object(schema):
    body = deref(
        schema, get(schema, TERM)["responses"]["200"]["content"]["application/json"]["schema"]
    )
    assert body["type"] == "object"
    assert set(body["properties"]) == {"index", "value"}


@pytest.mark.parametrize("path", [LIST, TERM])
def test_text_and_the_browsable_page_are_declared_as_strings(schema, path):
    content = get(schema, path)["responses"]["200"]["content"]
    assert set(content) == {"application/json", "text/plain", "text/html"}
    assert content["text/plain"]["schema"] == {"type": "string"}
    assert content["text/html"]["schema"] == {"type": "string"}


@pytest.mark.parametrize(
    ("path", "statuses"),
    [
        (LIST, {"400", "406", "412", "429", "503"}),
        (TERM, {"400", "404", "406", "412", "429", "503"}),
    ],
)
def test_errors_are_declared_as_problem_details(schema, path, statuses):
    responses = get(schema, path)["responses"]
    assert {code for code in responses if code >= "400"} == statuses
    for code in statuses:
        (media_type,) = responses[code]["content"]
        assert media_type == "application/problem+json"
        problem = deref(schema, responses[code]["content"][media_type]["schema"])
        assert {"type", "title", "status", "detail"} <= set(problem["required"])


def test_not_modified_is_declared_without_a_body(schema):
    for path in (LIST, TERM):
        assert "content" not in get(schema, path)["responses"]["304"]


def test_methods_and_paths_the_api_lacks_are_documented_as_problems(schema):
    responses = schema["components"]["responses"]
    for name in ("NotFound", "MethodNotAllowed"):
        (media_type,) = responses[name]["content"]
        assert media_type == "application/problem+json"


@pytest.mark.parametrize(
    ("path", "name", "maximum"),
    [(LIST, "n", 1_234), (LIST, "offset", 1_234), (TERM, "index", 5_678)],
)
def test_numbers_are_bounded_by_the_settings_at_generation(schema, path, name, maximum):
    declared = parameter(schema, path, name)["schema"]
    assert declared["type"] == "integer"
    assert (declared["minimum"], declared["maximum"]) == (0, maximum)


@pytest.mark.parametrize("path", [LIST, TERM])
def test_format_and_numbers_are_enumerated(schema, path):
    assert sorted(parameter(schema, path, "format")["schema"]["enum"]) == FORMATS
    assert sorted(parameter(schema, path, "numbers")["schema"]["enum"]) == ["number", "string"]


def test_the_bounds_in_the_schema_are_the_ones_enforced(client, schema):
    # The largest schema-valid n is answered; one past it is outside the schema and a 400.
    assert client.get(LIST, {"n": 1_234}).status_code == 200
    assert client.get(LIST, {"n": 1_235}).status_code == 400
    assert client.get(TERM.format(index=5_678)).status_code == 200
    assert client.get(TERM.format(index=5_679)).status_code == 400
