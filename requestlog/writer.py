"""Writes rows to the RequestLog (and RequestAggregate) table: one statement per batch.

Each request id is stored once (a unique constraint): a batch written again
(a retry after a commit whose answer was lost, a spool file read back after
its writer gave up on it) adds only the rows that are not there yet. A batch
the database refuses for what a row holds is written again row by row
(insert_each), so that one bad row does not keep the others out.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import (
    DEFAULT_DB_ALIAS,
    DatabaseError,
    DataError,
    IntegrityError,
    connections,
    transaction,
)

from .models import RequestAggregate, RequestLog
from .rows import AGGREGATE_COLUMNS, COLUMNS, Row

# What the database raises for what a row holds, and raises again on every
# retry: a value its column cannot hold (DataError: too long, out of range, a
# NUL in text on PostgreSQL) or a CHECK / NOT NULL violation (IntegrityError).
# A stored request id is no such error: ON CONFLICT DO NOTHING skips it.
# Anything else (OperationalError, InterfaceError: the connection) is worth a retry.
ROW_ERRORS = (DataError, IntegrityError)


def insert_rows(rows: Sequence[Row], *, using: str = DEFAULT_DB_ALIAS) -> None:
    """Insert rows in one transaction, skipping request ids already stored.

    PostgreSQL gets COPY (no INSERT compiled per row: about ten times cheaper,
    and the writer competes with the API for the interpreter); only when the
    batch holds an id already stored is it inserted again with ON CONFLICT DO
    NOTHING. Elsewhere one executemany with ON CONFLICT DO NOTHING.
    """
    if not rows:
        return
    connection = connections[using]
    quote = connection.ops.quote_name
    table = quote(RequestLog._meta.db_table)
    columns = ", ".join(quote(name) for name in COLUMNS)  # no field renames its column
    placeholders = ", ".join(["%s"] * len(COLUMNS))
    insert = (
        f"INSERT INTO {table} ({columns}) VALUES ({placeholders}) "
        f"ON CONFLICT ({quote('request_id')}) DO NOTHING"
    )
    with transaction.atomic(using=using), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            try:
                # Django's wrapper turns the driver's UniqueViolation into IntegrityError.
                with (
                    transaction.atomic(using=using),
                    connection.wrap_database_errors,
                    cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy,
                ):
                    for row in rows:
                        copy.write_row(row)
                return
            except IntegrityError:
                pass  # a request id already stored: the savepoint is rolled back
            cursor.executemany(insert, rows)
            return
        adapt_time = connection.ops.adapt_datetimefield_value
        cursor.executemany(insert, [(adapt_time(row[0]), *row[1:]) for row in rows])


def insert_each(
    rows: Sequence[Row], *, using: str = DEFAULT_DB_ALIAS
) -> list[tuple[Row, DatabaseError]]:
    """Insert rows one transaction each; return those refused for their data, with the error.

    Any other error propagates: the rows written before it stay written, and
    the batch written again skips them by request id.
    """
    refused: list[tuple[Row, DatabaseError]] = []
    for row in rows:
        try:
            insert_rows([row], using=using)
        except ROW_ERRORS as exc:
            refused.append((row, exc))
    return refused


def insert_aggregates(rows: Sequence[Row], *, using: str = DEFAULT_DB_ALIAS) -> None:
    """Insert RequestAggregate rows (AGGREGATE_COLUMNS order), skipping aggregate ids stored.

    One executemany with ON CONFLICT DO NOTHING: aggregates are few (one per
    client, minute, reason and status), so COPY would gain nothing.
    """
    if not rows:
        return
    connection = connections[using]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(name) for name in AGGREGATE_COLUMNS)
    placeholders = ", ".join(["%s"] * len(AGGREGATE_COLUMNS))
    insert = (
        f"INSERT INTO {quote(RequestAggregate._meta.db_table)} ({columns}) "
        f"VALUES ({placeholders}) ON CONFLICT ({quote('aggregate_id')}) DO NOTHING"
    )
    minute = AGGREGATE_COLUMNS.index("minute")
    adapt_time = connection.ops.adapt_datetimefield_value
    adapted = [
        (*row[:minute], adapt_time(row[minute]), *row[minute + 1 :])
        if connection.vendor != "postgresql"
        else row
        for row in rows
    ]
    with transaction.atomic(using=using), connection.cursor() as cursor:
        cursor.executemany(insert, adapted)
