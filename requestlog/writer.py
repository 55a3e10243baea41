"""Writes rows to the RequestLog table: one statement per batch, in one transaction."""

from __future__ import annotations

from collections.abc import Sequence

from django.db import DEFAULT_DB_ALIAS, connections, transaction

from .models import RequestLog
from .rows import COLUMNS, Row


def insert_rows(rows: Sequence[Row], *, using: str = DEFAULT_DB_ALIAS) -> None:
    """Insert rows in one transaction: COPY on PostgreSQL, executemany elsewhere.

    Neither builds model instances or compiles an INSERT per row: that costs
    about ten times more and competes with the API for the interpreter.
    """
    if not rows:
        return
    connection = connections[using]
    quote = connection.ops.quote_name
    table = quote(RequestLog._meta.db_table)
    columns = ", ".join(quote(name) for name in COLUMNS)  # no field renames its column
    with transaction.atomic(using=using), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            return
        adapt_time = connection.ops.adapt_datetimefield_value
        prepared = [(adapt_time(row[0]), *row[1:]) for row in rows]
        placeholders = ", ".join(["%s"] * len(COLUMNS))
        cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({placeholders})", prepared)
