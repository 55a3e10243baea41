"""URL wiring: the versioned API, its schema and docs, probes and the admin."""

from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from fibonacci import health
from fibonacci.api import errors
from fibproject import admin_login, metrics

# Failed logins are counted and, past FIB_ADMIN_LOGIN_RATE, refused before hashing.
admin.site.login_form = admin_login.ThrottledAuthenticationForm

urlpatterns = [
    path("api/v1/", include("fibonacci.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    # Prometheus metrics, for the operator's network only (404 for anyone else).
    path("metrics", metrics.metrics_view, name="metrics"),
    # Before the admin's own login/ (the same path): answers a throttled attempt with 429.
    path("admin/login/", admin_login.login, name="admin_login"),
    path("admin/", admin.site.urls),
    # Unknown API paths answer problem details even with DEBUG on.
    re_path(r"^api/", errors.not_found),
]

handler400 = "fibonacci.api.errors.bad_request"
handler404 = "fibonacci.api.errors.not_found"
handler500 = "fibonacci.api.errors.server_error"
