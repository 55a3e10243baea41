"""nginx in front of the servers under test, rendered into a scratch prefix (never /etc/nginx).

deploy/nginx.conf, rendered by deploy/nginx.py and run by deploy/processes.py as
in production: one
nginx per upstream, so the benchmark measures the shipped proxy config
(buffering, access log, limit_req and limit_conn, security headers). Its
per-IP shield is raised out of reach, since every wrk connection comes from
127.0.0.1. Static bodies are served by that config's own `/static/` location.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from responses import SIZES, body_file_name, url_path
from servers import GUNICORN_TIMEOUT_S, RunningServer, free_port

from deploy import processes
from deploy.nginx import NginxLayout, prepare_nginx, render_nginx_conf

# Far above anything wrk sends from its single address.
SHIELD_RATE, SHIELD_BURST, SHIELD_CONN = "1000000r/s", 1_000_000, 10_000
STATIC = "static"

# name -> n -> URL through nginx
FrontURLs = dict[str, dict[int, str]]


@dataclass(frozen=True)
class StaticBodies:
    """Captured bodies to serve as static files, and their Content-Type."""

    root: Path
    content_type: str
    sizes: Sequence[int]


def readable_by_workers(root: Path) -> None:
    """Open the scratch tree to nginx's unprivileged workers (mkdtemp makes it 0700)."""
    for directory, _, files in os.walk(root):
        os.chmod(directory, 0o755)
        for name in files:
            os.chmod(Path(directory) / name, 0o644)


def api_urls(port: int, sizes: Sequence[int]) -> dict[int, str]:
    """n -> the API URL on 127.0.0.1:port."""
    return {n: f"http://127.0.0.1:{port}{url_path(n)}" for n in sizes}


@contextlib.contextmanager
def behind_nginx(
    *, scratch: Path, upstreams: Sequence[RunningServer], static: StaticBodies | None = None
) -> Iterator[FrontURLs]:
    """One nginx per upstream from deploy/nginx.conf: name -> n -> URL (and `static`)."""
    print(
        "\nnginx: deploy/nginx.conf rendered by deploy/nginx.py "
        "(limit_req/limit_conn raised out of reach; one nginx per upstream)"
    )
    sizes = static.sizes if static is not None else SIZES
    readable_by_workers(scratch)
    urls: FrontURLs = {}
    with contextlib.ExitStack() as running:
        for server in upstreams:
            port = free_port()
            layout = NginxLayout(prefix=scratch / f"nginx-{server.name}")
            conf_text = render_nginx_conf(
                prefix=layout.prefix,
                listen=f"127.0.0.1:{port}",
                upstreams=[f"127.0.0.1:{server.port}"],
                static_root=static.root if static is not None else scratch,
                gunicorn_timeout_seconds=GUNICORN_TIMEOUT_S,
                limit_req_rate=SHIELD_RATE,
                limit_req_burst=SHIELD_BURST,
                limit_conn=SHIELD_CONN,
            )
            prepare_nginx(layout, conf_text=conf_text)
            process = processes.start_nginx(layout)
            running.callback(processes.stop_nginx, process)
            urls[server.name] = api_urls(port, sizes)
            processes.wait_until_ready(urls[server.name][sizes[0]], process=process)
        if static is not None:
            urls[STATIC] = {
                n: f"http://127.0.0.1:{port}/static/{body_file_name(n)}" for n in static.sizes
            }
        yield urls
