"""Logging filters: what a client's own mistake may cost the log.

Used by LOGGING in fibproject/settings.py. No Django settings are read here.
"""

from __future__ import annotations

import logging

# Django's loggers for requests a client made suspicious on purpose or by
# mistake (a disallowed Host, a malformed cookie or form): the message says it
# all, and a traceback per request would let any client fill the log.
CLIENT_FAULT_LOGGERS = ("django.security.",)
# Answers we give on purpose while a dependency is down (the limiter failing
# closed, /readyz not ready): their own modules log the outage once per
# interval, so django.request's line per answer would only repeat it.
EXPECTED_UNAVAILABLE_STATUS = 503


class ClientFaultWithoutTraceback(logging.Filter):
    """Keeps a client-caused record to its one line, and drops django.request's line per 503."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Strip exc_info from records of django.security.*; drop django.request's 503s."""
        if (
            record.name == "django.request"
            and getattr(record, "status_code", None) == EXPECTED_UNAVAILABLE_STATUS
        ):
            return False
        if record.name.startswith(CLIENT_FAULT_LOGGERS):
            record.exc_info = None
            record.exc_text = None
            record.stack_info = None
        return True
