"""RequestLog, taken over from the `fibonacci` app with its table, rows and permissions.

Nothing in the database changes but the content type's app label, so that the
permissions already granted (view_requestlog and the rest) keep their rows
and now read `requestlog.view_requestlog`. A database created by this
migration directly gets the same table from fibonacci's first migration.
"""

from django.db import migrations, models


def _relabel_content_type(apps, schema_editor, *, old: str, new: str) -> None:
    ContentType = apps.get_model("contenttypes", "ContentType")
    db = schema_editor.connection.alias
    moving = ContentType.objects.using(db).filter(app_label=old, model="requestlog")
    if not moving.exists():
        return  # a new database: post_migrate creates the content type later
    # A content type created under the new label already (by a partial run)
    # would block the rename; it can hold no grants worth keeping over the old.
    ContentType.objects.using(db).filter(app_label=new, model="requestlog").delete()
    moving.update(app_label=new)


def forwards(apps, schema_editor):
    _relabel_content_type(apps, schema_editor, old="fibonacci", new="requestlog")


def backwards(apps, schema_editor):
    _relabel_content_type(apps, schema_editor, old="requestlog", new="fibonacci")


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("fibonacci", "0001_request_log"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='RequestLog',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('time', models.DateTimeField(help_text='When the request arrived.')),
                        ('method', models.CharField(max_length=8)),
                        ('endpoint', models.CharField(choices=[('sequence', 'sequence (/api/v1/fibonacci/)'), ('term', 'term (/api/v1/fibonacci/{index}/)'), ('root', 'API root (/api/v1/)'), ('schema', 'OpenAPI schema'), ('docs', 'API docs'), ('unknown', 'unknown path (404)')], max_length=16)),
                        ('n', models.PositiveIntegerField(blank=True, help_text='Null when invalid.', null=True)),
                        ('offset', models.PositiveIntegerField(blank=True, help_text='Null when invalid.', null=True)),
                        ('index', models.PositiveIntegerField(blank=True, help_text='Null when invalid.', null=True)),
                        ('query', models.CharField(blank=True, max_length=512)),
                        ('status', models.PositiveSmallIntegerField()),
                        ('client_ip', models.CharField(help_text='Truncated when anonymized.', max_length=45)),
                        ('user_agent', models.CharField(blank=True, max_length=256)),
                        ('duration_ms', models.FloatField()),
                        ('response_bytes', models.PositiveBigIntegerField()),
                        ('rate_limited', models.BooleanField(default=False)),
                        ('request_id', models.CharField(max_length=64)),
                    ],
                    options={
                        'db_table': 'fibonacci_requestlog',
                        'ordering': ('-time', '-id'),
                        'indexes': [models.Index(fields=['time', 'id'], name='requestlog_time'), models.Index(fields=['endpoint', 'time'], name='requestlog_endpoint_time'), models.Index(fields=['status', 'time'], name='requestlog_status_time'), models.Index(fields=['client_ip', 'time'], name='requestlog_client_time'), models.Index(fields=['request_id'], name='requestlog_request_id'), models.Index(condition=models.Q(('rate_limited', True)), fields=['time'], name='requestlog_limited_time')],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(forwards, backwards),
    ]
