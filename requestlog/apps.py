"""Application configuration for the request log."""

from django.apps import AppConfig


class RequestLogConfig(AppConfig):
    """The `requestlog` app: the RequestLog model, its writer, admin and commands."""

    name = "requestlog"
    verbose_name = "Request log"
    default_auto_field = "django.db.models.BigAutoField"
