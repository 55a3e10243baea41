"""`make stack`: the production stack on one machine, without root: nginx in front of gunicorn.

run_stack renders deploy/nginx.conf into a temporary prefix, runs
collectstatic and migrate, starts gunicorn and nginx, and serves on
http://127.0.0.1:8080/ until Ctrl-C or SIGTERM, which stops nginx, then
gunicorn gracefully (answering what is queued, flushing the request log), by
process id. Started by `python -m deploy stack` (deploy/__main__.py).
"""

from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from deploy.nginx import (
    EdgeFiles,
    NginxLayout,
    loopback_listen,
    make_world_readable_dir,
    prepare_edge_files,
    prepare_nginx,
    render_nginx_conf,
)
from deploy.processes import (
    gunicorn_setting,
    manage,
    service_environment,
    shell_service_variables,
    start_edge_log_shipper,
    start_gunicorn,
    start_nginx,
    stop_gunicorn,
    stop_nginx,
    stop_process,
    wait_until_ready,
)


def stack_environment(*, prefix: Path, app_bind: str) -> dict[str, str]:
    """The process environment of `make stack`: production settings, local defaults.

    Any service variable set in the shell wins over these defaults
    (`GUNICORN_WORKERS=3 make stack`), except the bind address, which is the stack's.
    """
    env = service_environment(
        # A fresh key per run: sessions do not outlive the stack, which is fine locally.
        secret_key=secrets.token_urlsafe(50),
        # Plain HTTP on loopback: Secure cookies would lock the admin out.
        DJANGO_SECURE_COOKIES="false",
        DJANGO_STATIC_ROOT=str(prefix / "static"),
        # nginx connects from loopback; X-Real-IP is believed only from it.
        FIB_TRUSTED_PROXIES="127.0.0.1",
    )
    env.update(shell_service_variables())
    env["DJANGO_SETTINGS_MODULE"] = "fibproject.settings"
    env["GUNICORN_BIND"] = app_bind
    if not env.get("REDIS_URL"):
        # A local-memory cache counts rate limits per process: one worker only.
        env.setdefault("GUNICORN_WORKERS", "1")
    return env


def _without_password(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def stack_edge(prefix: Path, *, env: dict[str, str]) -> EdgeFiles:
    """The edge's files under the prefix, its policy written by the app under `env`."""
    edge = EdgeFiles(
        policy=prefix / "edge-policy.lua", log=prefix / "edge.log", cache_dir=prefix / "cache"
    )
    manage("edge_policy", "--output", str(edge.policy), env=env)
    prepare_edge_files(edge)
    return edge


def run_stack(
    *,
    port: int,
    app_port: int,
    limit_req_rate: str,
    limit_req_burst: int,
    limit_conn: int,
    edge: bool = True,
    edge_metrics_port: int = 9145,
) -> int:
    """Serve the stack on 127.0.0.1:port until SIGINT or SIGTERM; return the exit status.

    With `edge` (the default), nginx counts the budgets and caches answers, and
    the edge log is shipped into the request log by a ship_edge_log process,
    which serves the edge's metrics on 127.0.0.1:edge_metrics_port."""
    prefix = make_world_readable_dir(Path(tempfile.mkdtemp(prefix="fibonacci-stack-")))
    env = stack_environment(prefix=prefix, app_bind=f"127.0.0.1:{app_port}")
    static_root = make_world_readable_dir(Path(env["DJANGO_STATIC_ROOT"]))
    layout = NginxLayout(prefix)
    processes: list[tuple[str, subprocess.Popen[bytes]]] = []

    def request_stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Both explicitly: a shell starting this in the background may have set SIGINT to ignore.
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    status = 0
    try:
        print(f"stack: prefix {prefix}", flush=True)
        print(
            f"stack: database {_without_password(env.get('DATABASE_URL', 'sqlite (db.sqlite3)'))}, "
            f"cache {_without_password(env.get('REDIS_URL', 'local memory (one worker)'))}",
            flush=True,
        )
        manage("collectstatic", "--no-input", "--verbosity", "0", env=env)
        manage("migrate", "--no-input", "--verbosity", "0", env=env)
        edge_files = stack_edge(prefix, env=env) if edge else None
        conf_text = render_nginx_conf(
            prefix=prefix,
            # IPv6 loopback too, where the host has it: the limiter groups IPv6 by /64.
            listen=loopback_listen(port),
            upstreams=[f"127.0.0.1:{app_port}"],
            static_root=static_root,
            # The timeout of the gunicorn started below, under the same environment.
            gunicorn_timeout_seconds=gunicorn_setting("timeout", env),
            limit_req_rate=limit_req_rate,
            limit_req_burst=limit_req_burst,
            limit_conn=limit_conn,
            edge=edge_files,
        )
        prepare_nginx(layout, conf_text=conf_text)
        gunicorn = start_gunicorn(env=env)
        processes.append(("gunicorn", gunicorn))
        wait_until_ready(f"http://127.0.0.1:{app_port}/healthz", process=gunicorn)
        if edge_files is not None:
            # Started before nginx and stopped after it: it ships the last lines too.
            shipper = start_edge_log_shipper(
                edge_files.log, env=env, metrics_port=edge_metrics_port
            )
            processes.append(("ship_edge_log", shipper))
            metrics_url = f"http://127.0.0.1:{edge_metrics_port}/metrics"
            wait_until_ready(metrics_url, process=shipper)
            print(
                f"stack: edge metrics on {metrics_url} (ship_edge_log pid {shipper.pid})",
                flush=True,
            )
        nginx = start_nginx(layout)
        processes.append(("nginx", nginx))
        wait_until_ready(f"http://127.0.0.1:{port}/healthz", process=nginx)
        print(
            f"stack: serving http://127.0.0.1:{port}/api/v1/fibonacci/?n=10 "
            f"(nginx pid {nginx.pid}, gunicorn pid {gunicorn.pid}; logs in {prefix}); "
            "Ctrl-C stops",
            flush=True,
        )
        while True:
            for name, process in processes:
                if process.poll() is not None:
                    print(f"stack: {name} exited ({process.returncode})", file=sys.stderr)
                    status = 1
                    raise KeyboardInterrupt
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    except (subprocess.CalledProcessError, ImproperlyConfigured, RuntimeError, TimeoutError) as exc:
        print(f"stack: {exc}", file=sys.stderr)
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # nginx first, so that nothing new reaches gunicorn while it drains.
        for name, process in reversed(processes):
            if name == "nginx":
                stop_nginx(process)
            elif name == "ship_edge_log":
                stop_process(process)
            else:
                stop_gunicorn(process)
        print("stack: stopped", flush=True)
        shutil.rmtree(prefix, ignore_errors=True)
    return status
