"""The edge's tables: RequestAggregate (what nginx counted instead of logging each request)
and EdgeLogPosition (how far `manage.py ship_edge_log` has shipped each edge log).

New tables only: atomic on both databases, so a failed run leaves nothing to
clean up and can simply be run again.
"""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('requestlog', '0003_cache_column'),
    ]

    operations = [
        migrations.CreateModel(
            name='EdgeLogPosition',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('path', models.CharField(help_text="The log's absolute path.", max_length=512, unique=True)),
                ('inode', models.PositiveBigIntegerField(help_text='The inode of the file being read.')),
                ('offset', models.PositiveBigIntegerField(help_text='Bytes shipped: the end of the last line.')),
                ('lag_bytes', models.PositiveBigIntegerField(default=0, help_text='Bytes written but not shipped yet, when last updated.')),
                ('skipped_lines', models.PositiveBigIntegerField(default=0, help_text='Lines skipped (malformed, or refused by the database), in all.')),
                ('last_shipped', models.DateTimeField(blank=True, help_text='Last lines committed.', null=True)),
                ('updated', models.DateTimeField(help_text='The shipper last wrote this row (about every 30 s).')),
            ],
        ),
        migrations.CreateModel(
            name='RequestAggregate',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('minute', models.DateTimeField(help_text='The start of the minute counted.')),
                ('client_ip', models.CharField(help_text='Truncated when anonymized.', max_length=45)),
                ('reason', models.CharField(choices=[('shield', "shield (nginx's per-address limit)"), ('over_rate', 'over the per-client log rate')], max_length=16)),
                ('status', models.PositiveSmallIntegerField()),
                ('count', models.PositiveIntegerField()),
                ('aggregate_id', models.CharField(help_text="The edge's id of this count.", max_length=128)),
            ],
            options={
                'ordering': ('-minute', '-id'),
                'indexes': [models.Index(fields=['minute', 'id'], name='requestaggregate_minute'), models.Index(fields=['reason', 'minute'], name='requestaggregate_reason'), models.Index(fields=['client_ip', 'minute'], name='requestaggregate_client')],
                'constraints': [models.UniqueConstraint(fields=('aggregate_id',), name='requestaggregate_id_unique')],
            },
        ),
    ]
