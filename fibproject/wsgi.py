"""WSGI entry point for gunicorn.

The prepared sequence is built here, at import, so that gunicorn's
`preload_app` builds it once in the master and the forked workers share it.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fibproject.settings")

application = get_wsgi_application()

from django.conf import settings  # noqa: E402 - needs the settings module set above

from fibonacci.sequence import sequence_table  # noqa: E402

sequence_table(settings.FIB_MAX_N)
