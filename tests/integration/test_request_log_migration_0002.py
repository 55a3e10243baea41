"""Migration requestlog 0002: duplicates removed, the unique constraint made, both ways, again.

Each test starts from requestlog 0001 and leaves the database migrated to the
latest state, as the rest of the suite expects it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from requestlog.models import RequestLog

BEFORE = [("requestlog", "0001_initial")]
AFTER = [("requestlog", "0002_request_id_unique")]
TABLE = "fibonacci_requestlog"
OLD_INDEX = "requestlog_request_id"
CONSTRAINT = "requestlog_request_id_unique"


def _migrate(targets: list[tuple[str, str]]) -> MigrationExecutor:
    """Migrate to targets with a fresh executor (its loader reads what is applied now)."""
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    return executor


@pytest.fixture
def at_0001() -> Iterator[Any]:
    """The database at requestlog 0001: its historical RequestLog model; latest state after."""
    executor = _migrate(BEFORE)
    try:
        yield executor.loader.project_state(BEFORE[0]).apps.get_model("requestlog", "RequestLog")
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())


def _row(request_id: str, *, minute: int, **fields: Any) -> dict[str, Any]:
    return {
        "time": datetime(2026, 11, 28, 12, 0, tzinfo=UTC) + timedelta(minutes=minute),
        "method": "GET",
        "endpoint": "sequence",
        "n": minute,
        "offset": 0,
        "query": f"n={minute}",
        "status": 200,
        "client_ip": "203.0.113.9",
        "user_agent": f"agent {minute}",
        "duration_ms": 1.5,
        "response_bytes": 41,
        "rate_limited": False,
        "request_id": request_id,
        **fields,
    }


FIELDS = ("id", "time", "n", "query", "user_agent", "request_id")


def _stored() -> list[tuple[Any, ...]]:
    return list(RequestLog.objects.order_by("id").values_list(*FIELDS))


def _values(model: Any, pk: int) -> tuple[Any, ...]:
    return tuple(model.objects.filter(pk=pk).values_list(*FIELDS).get())


def _request_id_indexes() -> dict[str, Any]:
    """The constraints and indexes over request_id alone, by name."""
    with connection.cursor() as cursor:
        found = connection.introspection.get_constraints(cursor, TABLE)
    return {name: info for name, info in found.items() if info["columns"] == ["request_id"]}


def _assert_unique_constraint_only() -> None:
    indexes = _request_id_indexes()
    assert set(indexes) == {CONSTRAINT}
    assert indexes[CONSTRAINT]["unique"]


@pytest.mark.django_db(transaction=True)
def test_duplicates_are_reduced_to_the_lowest_id_and_other_rows_kept(at_0001):
    old = at_0001
    first = old.objects.create(**_row("a" * 32, minute=0))
    alone = old.objects.create(**_row("b" * 32, minute=1))
    second = old.objects.create(**_row("a" * 32, minute=2))  # a batch retried: same id
    third = old.objects.create(**_row("a" * 32, minute=3))
    other = old.objects.create(**_row("c" * 32, minute=4))
    other_copy = old.objects.create(**_row("c" * 32, minute=5))
    kept = [_values(old, row.pk) for row in (first, alone, other)]

    _migrate(AFTER)

    assert _stored() == kept
    assert not RequestLog.objects.filter(pk__in=[second.pk, third.pk, other_copy.pk]).exists()
    _assert_unique_constraint_only()


@pytest.mark.django_db(transaction=True)
def test_backwards_restores_the_plain_index_and_forwards_again_works(at_0001):
    old = at_0001
    _migrate(AFTER)
    old.objects.create(**_row("a" * 32, minute=0))  # the table as 0002 leaves it

    _migrate(BEFORE)
    indexes = _request_id_indexes()
    assert set(indexes) == {OLD_INDEX}
    assert not indexes[OLD_INDEX]["unique"]
    copy = old.objects.create(**_row("a" * 32, minute=1))  # allowed again: no constraint

    _migrate(AFTER)
    _assert_unique_constraint_only()
    assert [row[-1] for row in _stored()] == ["a" * 32]
    assert not RequestLog.objects.filter(pk=copy.pk).exists()


# The concurrent build and ALTER ... USING INDEX exist on PostgreSQL only.
@pytest.mark.postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_run_stopped_after_the_alter_completes_when_run_again(at_0001):
    old = at_0001
    kept = old.objects.create(**_row("a" * 32, minute=0))
    with connection.cursor() as cursor:
        # What the first run did before it stopped (waiting to drop the old index).
        cursor.execute(f"CREATE UNIQUE INDEX CONCURRENTLY {CONSTRAINT} ON {TABLE} (request_id)")
        cursor.execute(
            f"ALTER TABLE {TABLE} ADD CONSTRAINT {CONSTRAINT} UNIQUE USING INDEX {CONSTRAINT}"
        )

    _migrate(AFTER)

    _assert_unique_constraint_only()
    assert [row[0] for row in _stored()] == [kept.pk]


@pytest.mark.postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_build_failed_on_a_duplicate_is_rebuilt_when_run_again(at_0001):
    old = at_0001
    kept = old.objects.create(**_row("a" * 32, minute=0))
    old.objects.create(**_row("a" * 32, minute=1))  # arrived during the build
    with connection.cursor() as cursor:
        with pytest.raises(Exception, match="could not create unique index"):
            cursor.execute(f"CREATE UNIQUE INDEX CONCURRENTLY {CONSTRAINT} ON {TABLE} (request_id)")
        cursor.execute(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = %s::regclass", [CONSTRAINT]
        )
        assert cursor.fetchone() == (False,)  # the invalid index the failed build leaves

    _migrate(AFTER)

    _assert_unique_constraint_only()
    assert [row[0] for row in _stored()] == [kept.pk]
