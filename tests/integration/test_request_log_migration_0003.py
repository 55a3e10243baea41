"""Migration requestlog 0003: the cache column and its index, both ways, and run again.

Each test leaves the database migrated to the latest state, as the rest of the
suite expects it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from requestlog.models import RequestLog

BEFORE = [("requestlog", "0002_request_id_unique")]
AFTER = [("requestlog", "0003_cache_column")]
TABLE = "fibonacci_requestlog"
INDEX = "requestlog_cache_time"
migration = importlib.import_module("requestlog.migrations.0003_cache_column")

pytestmark = pytest.mark.django_db(transaction=True)


def _migrate(targets: list[tuple[str, str]]) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    return executor


@pytest.fixture
def at_0002() -> Iterator[Any]:
    """The database at requestlog 0002: its historical RequestLog model; latest state after."""
    executor = _migrate(BEFORE)
    try:
        yield executor.loader.project_state(BEFORE[0]).apps.get_model("requestlog", "RequestLog")
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())


def _row(model: Any, request_id: str) -> Any:
    return model.objects.create(
        time=datetime(2026, 12, 1, tzinfo=UTC),
        method="GET",
        endpoint="sequence",
        n=1,
        offset=0,
        query="n=1",
        status=200,
        client_ip="192.0.2.1",
        user_agent="",
        duration_ms=1,
        response_bytes=3,
        request_id=request_id,
    )


def _cache_index_columns() -> list[str] | None:
    with connection.cursor() as cursor:
        index = connection.introspection.get_constraints(cursor, TABLE).get(INDEX)
    return None if index is None else list(index["columns"])


def _run_forwards_again() -> None:
    with connection.schema_editor(atomic=False) as editor:
        migration.forwards(None, editor)


def test_rows_written_before_get_no_cache_outcome_and_back_again(at_0002):
    kept = _row(at_0002, "a" * 32)
    _migrate(AFTER)
    assert RequestLog.objects.get(pk=kept.pk).cache == ""
    assert _cache_index_columns() == ["cache", "time"]

    _migrate(BEFORE)
    assert _cache_index_columns() is None
    old_writer = _row(at_0002, "b" * 32)  # a writer that does not know the column
    _migrate(AFTER)
    assert RequestLog.objects.get(pk=old_writer.pk).cache == ""


def test_running_it_again_changes_nothing(at_0002):
    _migrate(AFTER)
    _run_forwards_again()
    assert _cache_index_columns() == ["cache", "time"]


@pytest.mark.postgresql_only
def test_an_index_left_invalid_by_a_failed_build_is_rebuilt(at_0002):
    _migrate(AFTER)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE pg_index SET indisvalid = false WHERE indexrelid = %s::regclass", [INDEX]
        )
    _run_forwards_again()
    with connection.cursor() as cursor:
        cursor.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = %s::regclass", [INDEX])
        assert cursor.fetchone() == (True,)
