#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main() -> None:
    """Run administrative tasks."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fibproject.settings")
    # The command line of a checkout is development (as `make run` is): DEBUG
    # on, so a newcomer's `./manage.py createsuperuser` needs no secret key.
    # Servers start through fibproject.wsgi, where DEBUG stays off unless set;
    # production sets DJANGO_DEBUG=false in its environment file for this too.
    os.environ.setdefault("DJANGO_DEBUG", "true")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
