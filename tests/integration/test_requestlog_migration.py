"""Upgrading a database made when the request log belonged to the `fibonacci` app.

The model moved to its own app: the table, its rows and the permissions
already granted must come through the upgrade untouched and working.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from requestlog.models import RequestLog

FIBONACCI_0001 = ("fibonacci", "0001_request_log")
BEFORE_THE_MOVE = [("requestlog", None), FIBONACCI_0001]
ROW = {
    "time": datetime(2026, 11, 28, 12, 0, tzinfo=UTC),
    "method": "GET",
    "endpoint": "sequence",
    "n": 5,
    "offset": 0,
    "query": "n=5",
    "status": 200,
    "client_ip": "203.0.113.9",
    "duration_ms": 1.5,
    "response_bytes": 41,
    "rate_limited": False,
    "request_id": "a" * 32,
}


def _database_as_it_was_before_the_move() -> None:
    """fibonacci 0001 applied, with the content type and permissions Django made for it."""
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE_THE_MOVE)
    old_apps = executor.loader.project_state(FIBONACCI_0001).apps
    content_type, _ = ContentType.objects.get_or_create(app_label="fibonacci", model="requestlog")
    ContentType.objects.filter(app_label="requestlog").delete()
    for action in ("add", "change", "delete", "view"):
        Permission.objects.get_or_create(
            content_type=content_type,
            codename=f"{action}_requestlog",
            defaults={"name": f"Can {action} request log"},
        )
    old_model = old_apps.get_model("fibonacci", "RequestLog")
    old_model.objects.create(**ROW)


@pytest.mark.django_db(transaction=True)
def test_upgrade_keeps_the_rows_and_the_granted_permissions(client):
    _database_as_it_was_before_the_move()
    operator = User.objects.create_user("operator", password="pw", is_staff=True)
    operator.user_permissions.add(
        Permission.objects.get(content_type__app_label="fibonacci", codename="view_requestlog")
    )

    call_command("migrate", verbosity=0)  # as an upgrade runs it, post_migrate included

    [row] = RequestLog.objects.all()
    assert row.request_id == ROW["request_id"] and row.client_ip == ROW["client_ip"]
    assert [ct.app_label for ct in ContentType.objects.filter(model="requestlog")] == ["requestlog"]
    codenames = Permission.objects.filter(
        content_type__app_label="requestlog", content_type__model="requestlog"
    ).values_list("codename", flat=True)
    assert sorted(codenames) == [f"{a}_requestlog" for a in ("add", "change", "delete", "view")]
    operator = User.objects.get(pk=operator.pk)  # no cached permissions
    assert operator.has_perm("requestlog.view_requestlog")
    client.force_login(operator)
    page = client.get("/admin/requestlog/requestlog/")
    assert page.status_code == 200
    assert ROW["client_ip"] in page.content.decode()


@pytest.mark.django_db(transaction=True)
def test_a_new_database_gets_the_same_table():
    tables = connection.introspection.table_names()
    assert RequestLog._meta.db_table == "fibonacci_requestlog"
    assert "fibonacci_requestlog" in tables
    assert not any(table == "requestlog_requestlog" for table in tables)
