"""Application configuration for the Fibonacci service."""

from django.apps import AppConfig


class FibonacciConfig(AppConfig):
    """The `fibonacci` app."""

    name = "fibonacci"
    verbose_name = "Fibonacci service"

    def ready(self) -> None:
        """Register the service's system checks."""
        from . import checks  # noqa: F401
