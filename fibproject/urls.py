"""URL wiring: the versioned API, its schema and docs, probes and the admin."""

from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from fibonacci import health
from fibonacci.api import errors

urlpatterns = [
    path("api/v1/", include("fibonacci.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    # Unknown API paths answer problem details even with DEBUG on.
    re_path(r"^api/", errors.not_found),
]

handler400 = "fibonacci.api.errors.bad_request"
handler404 = "fibonacci.api.errors.not_found"
handler500 = "fibonacci.api.errors.server_error"
