"""Routes of the public API, mounted at /api/v1/."""

from rest_framework.routers import DefaultRouter

from .views import FibonacciViewSet

app_name = "fibonacci"

router = DefaultRouter()
router.register("fibonacci", FibonacciViewSet, basename="fibonacci")

urlpatterns = router.urls
