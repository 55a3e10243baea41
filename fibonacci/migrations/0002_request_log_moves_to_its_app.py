"""RequestLog moves to the `requestlog` app: its state goes, its table stays.

The table (fibonacci_requestlog) and its rows are untouched; requestlog's
first migration takes the model over under the same table name.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("fibonacci", "0001_request_log"),
        ("requestlog", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="RequestLog")],
            database_operations=[],
        ),
    ]
