"""One row per request id: a unique constraint replaces the plain request_id index.

The writer inserts with ON CONFLICT (request_id) DO NOTHING, so a batch or a
spool file written twice cannot duplicate rows.

Existing duplicates (a batch retried after a commit whose answer was lost)
are deleted first, keeping the row with the lowest id. On PostgreSQL, where
the table is large, nothing takes a long lock: the unique index is built with
CREATE UNIQUE INDEX CONCURRENTLY (writes go on meanwhile), attached as the
constraint with ALTER TABLE ... USING INDEX (a brief lock, no scan), and the
old index dropped CONCURRENTLY; hence a non-atomic migration. Should a
duplicate arrive between the clean-up and the build (old workers still
writing during a rolling deploy), the build fails and leaves an invalid
index, which running the migration again drops and rebuilds. A run stopped
after the ALTER (say while the last DROP INDEX waited on a long transaction)
finds the constraint made and, run again, only drops the old index. Elsewhere
(SQLite in development) the same as plain index statements.
"""

from django.db import migrations, models

TABLE = "fibonacci_requestlog"
OLD_INDEX = "requestlog_request_id"
CONSTRAINT = "requestlog_request_id_unique"


def _delete_duplicates(schema_editor) -> None:
    # Window functions: PostgreSQL and SQLite >= 3.25 alike.
    schema_editor.execute(
        f"DELETE FROM {TABLE} WHERE id IN ("
        f" SELECT id FROM (SELECT id, ROW_NUMBER() OVER"
        f" (PARTITION BY request_id ORDER BY id) AS copy FROM {TABLE}) numbered"
        f" WHERE copy > 1)"
    )


def _constraint_exists(schema_editor) -> bool:
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_constraint WHERE conname = %s AND conrelid = %s::regclass",
            [CONSTRAINT, TABLE],
        )
        return cursor.fetchone() is not None


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        # The clean-up and the build read the whole table, and a DROP INDEX
        # CONCURRENTLY waits out older transactions: longer than
        # DJANGO_DB_STATEMENT_TIMEOUT_MS allows.
        schema_editor.execute("SET statement_timeout = 0")
        if _constraint_exists(schema_editor):
            # An earlier run stopped after the ALTER: the constraint owns the
            # index now (dropping it would fail), and no duplicate can exist.
            schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {OLD_INDEX}")
            return
    _delete_duplicates(schema_editor)
    if schema_editor.connection.vendor != "postgresql":
        # A unique index is SQLite's unique constraint; a later table rebuild
        # writes it inline from the model state.
        schema_editor.execute(f"DROP INDEX IF EXISTS {OLD_INDEX}")
        schema_editor.execute(f"CREATE UNIQUE INDEX {CONSTRAINT} ON {TABLE} (request_id)")
        return
    # A failed earlier run may have left an invalid index of this name.
    schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {CONSTRAINT}")
    schema_editor.execute(f"CREATE UNIQUE INDEX CONCURRENTLY {CONSTRAINT} ON {TABLE} (request_id)")
    # The one brief exclusive lock: rather fail (and run again) than queue the
    # writers behind a long transaction.
    schema_editor.execute("SET lock_timeout = '10s'")
    schema_editor.execute(
        f"ALTER TABLE {TABLE} ADD CONSTRAINT {CONSTRAINT} UNIQUE USING INDEX {CONSTRAINT}"
    )
    schema_editor.execute("SET lock_timeout = 0")
    schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {OLD_INDEX}")


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {CONSTRAINT}")
        schema_editor.execute(f"CREATE INDEX {OLD_INDEX} ON {TABLE} (request_id)")
        return
    schema_editor.execute("SET statement_timeout = 0")  # the build reads the whole table
    schema_editor.execute(
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {OLD_INDEX} ON {TABLE} (request_id)"
    )
    schema_editor.execute(f"ALTER TABLE {TABLE} DROP CONSTRAINT IF EXISTS {CONSTRAINT}")


class Migration(migrations.Migration):
    # CREATE/DROP INDEX CONCURRENTLY cannot run inside a transaction.
    atomic = False

    dependencies = [("requestlog", "0001_initial")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveIndex(model_name="requestlog", name=OLD_INDEX),
                migrations.AddConstraint(
                    model_name="requestlog",
                    constraint=models.UniqueConstraint(fields=["request_id"], name=CONSTRAINT),
                ),
            ],
            database_operations=[migrations.RunPython(forwards, backwards)],
        ),
    ]
