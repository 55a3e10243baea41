"""Sessions, authentication, messages and CSRF serve the admin and stay off the public API."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    user = User.objects.create_user("operator", password="secret-pass-1", is_staff=True)
    client.force_login(user)
    return client


@pytest.mark.parametrize(
    "path", ["/api/v1/fibonacci/?n=3", "/api/v1/fibonacci/7/", "/api/schema/", "/api/nowhere"]
)
def test_public_api_requests_get_no_session_user_messages_or_csrf_cookie(staff_client, path):
    response = staff_client.get(path)
    request = response.wsgi_request
    assert not hasattr(request, "session")
    assert not hasattr(request, "_messages")
    assert getattr(request, "user", None) is None  # DRF's anonymous user, not the operator
    assert "CSRF_COOKIE" not in request.META
    assert not response.cookies
    assert "Cookie" not in response.get("Vary", "")


def test_a_logged_in_operator_gets_the_same_api_answer_as_anyone(staff_client, client):
    anonymous = Client().get("/api/v1/fibonacci/?n=5")
    operator = staff_client.get("/api/v1/fibonacci/?n=5")
    assert operator.content == anonymous.content
    assert operator["ETag"] == anonymous["ETag"]


def test_the_admin_still_has_sessions_users_and_messages(staff_client):
    response = staff_client.get("/admin/")
    assert response.status_code == 200
    request = response.wsgi_request
    assert request.user.username == "operator"
    assert request.session.session_key
    assert hasattr(request, "_messages")


def test_the_admin_login_still_enforces_csrf():
    client = Client(enforce_csrf_checks=True)
    refused = client.post("/admin/login/", {"username": "x", "password": "y"})
    assert refused.status_code == 403

    page = client.get("/admin/login/")
    token = page.cookies["csrftoken"].value
    accepted = client.post(
        "/admin/login/", {"username": "x", "password": "y", "csrfmiddlewaretoken": token}
    )
    assert accepted.status_code == 200  # the form again, with its error: CSRF passed
