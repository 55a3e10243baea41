"""The served OpenAPI schema tells the truth: schemathesis checks every answer against it.

Requests generated from the schema at /api/schema/ (valid ones, and invalid
ones in negative mode) go through the WSGI application in-process; each
answer's status, content type and body must be what the schema declares for
it, not only free of 5xx. Bounded and derandomized: seconds, the same
examples every run.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, given, settings
from schemathesis import BaseSchema, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.django_db

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
OPERATIONS = [("GET", "/api/v1/fibonacci/"), ("GET", "/api/v1/fibonacci/{index}/")]
EXAMPLES_PER_OPERATION = 50


@pytest.fixture(autouse=True)
def _exact_integers_of_any_length() -> Iterator[None]:
    """Let the checker's JSON parser read F(index) past Python's default 4300-digit limit."""
    previous = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    yield
    sys.set_int_max_str_digits(previous)


@pytest.fixture
def served_schema(settings) -> BaseSchema:
    """The schema as /api/schema/ serves it (with tests/api's small caps), bound to the app."""
    return schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())


def test_the_checked_operations_are_all_the_schema_has(served_schema):
    operations = [result.ok() for result in served_schema.get_all_operations()]
    assert sorted((op.method.upper(), op.path) for op in operations) == sorted(OPERATIONS)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_every_answer_conforms_to_the_served_schema(served_schema, method, path, mode):
    operation = served_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def answer_conforms(case: Case) -> None:
        # The WSGI transport sends requests' `Accept-Encoding: gzip, deflate` but does not
        # decode: ask for identity (test_compression.py: gzip decodes to the same bytes).
        case.call_and_validate(checks=CHECKS, headers={"Accept-Encoding": "identity"})

    answer_conforms()
