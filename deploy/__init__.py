"""Deployment files: nginx.conf (a template), gunicorn.conf.py, systemd units, stack.py."""
