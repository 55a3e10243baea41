"""RequestLog.cache: whether nginx's cache answered (hit, miss, bypass or empty), with its index.

The column has a constant database default: PostgreSQL (11 and later) adds it
without rewriting the table, and a writer that does not name it (an older
release during a rolling deploy) still inserts. The index is built with
CREATE INDEX CONCURRENTLY (writes go on meanwhile), hence a non-atomic
migration. Every step is written to be run again: a run stopped part way (a
lock not granted in time, an invalid index left by a failed build) completes
when run again. Elsewhere (SQLite in development) the same as plain statements.
"""

from django.db import migrations, models

TABLE = "fibonacci_requestlog"
INDEX = "requestlog_cache_time"
ADD_COLUMN = f"ALTER TABLE {TABLE} ADD COLUMN {{exists}} cache varchar(8) DEFAULT '' NOT NULL"


def _index_valid(schema_editor) -> bool | None:
    """True: built and valid; False: left invalid by a failed build; None: absent."""
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE c.relname = %s",
            [INDEX],
        )
        row = cursor.fetchone()
    return None if row is None else bool(row[0])


def _sqlite_has_column(schema_editor) -> bool:
    with schema_editor.connection.cursor() as cursor:
        columns = schema_editor.connection.introspection.get_table_description(cursor, TABLE)
    return any(column.name == "cache" for column in columns)


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        if not _sqlite_has_column(schema_editor):
            schema_editor.execute(ADD_COLUMN.format(exists=""))
        schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {INDEX} ON {TABLE} (cache, time)")
        return
    # The index build reads the whole table: longer than DJANGO_DB_STATEMENT_TIMEOUT_MS allows.
    schema_editor.execute("SET statement_timeout = 0")
    # Adding the column takes a brief exclusive lock: rather fail (and run
    # again) than queue the writers behind a long transaction.
    schema_editor.execute("SET lock_timeout = '10s'")
    schema_editor.execute(ADD_COLUMN.format(exists="IF NOT EXISTS"))
    schema_editor.execute("SET lock_timeout = 0")
    valid = _index_valid(schema_editor)
    if valid:
        return
    if valid is False:
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
    schema_editor.execute(f"CREATE INDEX CONCURRENTLY {INDEX} ON {TABLE} (cache, time)")


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")
        if _sqlite_has_column(schema_editor):
            schema_editor.execute(f"ALTER TABLE {TABLE} DROP COLUMN cache")
        return
    schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
    schema_editor.execute("SET lock_timeout = '10s'")
    schema_editor.execute(f"ALTER TABLE {TABLE} DROP COLUMN IF EXISTS cache")
    schema_editor.execute("SET lock_timeout = 0")


class Migration(migrations.Migration):
    # CREATE/DROP INDEX CONCURRENTLY cannot run inside a transaction.
    atomic = False

    dependencies = [("requestlog", "0002_request_id_unique")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AddField(
                    model_name="requestlog",
                    name="cache",
                    field=models.CharField(
                        blank=True,
                        choices=[
                            ("hit", "hit"),
                            ("miss", "miss"),
                            ("bypass", "bypass"),
                            ("", "none (the app, or answered before the cache)"),
                        ],
                        db_default="",
                        default="",
                        help_text="Whether nginx's cache answered; empty for the app's own records.",
                        max_length=8,
                    ),
                ),
                migrations.AddIndex(
                    model_name="requestlog",
                    index=models.Index(fields=["cache", "time"], name=INDEX),
                ),
            ],
            database_operations=[migrations.RunPython(forwards, backwards)],
        ),
    ]
