"""Deployment: the nginx.conf template and its renderer, gunicorn.conf.py, systemd units, stacks.

Modules: nginx (render and check the nginx config), processes (start, probe
and stop gunicorn and nginx; shared by the tests and the benchmark), stack
(`make stack`), envfile (the service's environment file), gunicorn_worker
(the sync worker that answers its queue on SIGTERM); `python -m deploy` is
the command line (__main__).
"""
