"""Routes of the public API, mounted at /api/v1/."""

from rest_framework.routers import DefaultRouter

from .views import FibonacciViewSet

app_name = "fibonacci"

router = DefaultRouter()
# `?format=` selects the representation; `.json` suffix routes would be a second
# spelling of every URL (and would hand the views a `format` argument).
router.include_format_suffixes = False
router.register("fibonacci", FibonacciViewSet, basename="fibonacci")

urlpatterns = router.urls
