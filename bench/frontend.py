"""nginx in front of the servers under test, rendered into a scratch prefix (never /etc/nginx).

deploy/nginx.conf, rendered by deploy/nginx.py and run by deploy/processes.py as
in production: one nginx per front (an upstream and the options it is
rendered with), so the benchmark measures the shipped proxy config
(buffering, access log, limit_req and limit_conn, security headers). Unless a
front says otherwise, its per-IP shield is raised out of reach, since every
wrk connection comes from 127.0.0.1; a front's `options` are passed on to
render_nginx_conf as they are (the flood's shipped limits, the edge's
settings). Static bodies are served by that config's own `/static/` location.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from responses import SIZES, body_file_name, url_path
from servers import GUNICORN_TIMEOUT_S, RunningServer, free_port

from deploy import processes
from deploy.nginx import NginxLayout, prepare_nginx, render_nginx_conf

# Far above anything wrk sends from its single address.
SHIELD_RATE, SHIELD_BURST, SHIELD_CONN = "1000000r/s", 1_000_000, 10_000
RAISED_SHIELD: Mapping[str, Any] = {
    "limit_req_rate": SHIELD_RATE,
    "limit_req_burst": SHIELD_BURST,
    "limit_conn": SHIELD_CONN,
}
# The limits as shipped: render_nginx_conf's defaults.
SHIPPED_SHIELD: Mapping[str, Any] = {}
STATIC = "static"
# The captured bodies gzipped, served as files: the baseline of answers sent compressed.
STATIC_GZIP = "static-gz"

# name -> n -> URL through nginx
FrontURLs = dict[str, dict[int, str]]


@dataclass(frozen=True)
class Front:
    """One nginx in front of one upstream: its row name and its render_nginx_conf options."""

    name: str
    upstream: RunningServer
    options: Mapping[str, Any] = field(default_factory=lambda: RAISED_SHIELD)


@dataclass(frozen=True)
class RunningFront:
    """A started nginx: its base URL and where it keeps its config and logs."""

    name: str
    base_url: str
    layout: NginxLayout


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


def api_urls(base_url: str, sizes: Sequence[int]) -> dict[int, str]:
    """n -> the API URL below base_url."""
    return {n: f"{base_url}{url_path(n)}" for n in sizes}


def static_urls(base_url: str, sizes: Sequence[int], *, suffix: str = "") -> dict[int, str]:
    """n -> the URL of the captured body as a static file (suffix `.gz`: its gzipped copy)."""
    return {n: f"{base_url}/static/{body_file_name(n)}{suffix}" for n in sizes}


@contextlib.contextmanager
def nginx_fronts(
    *, scratch: Path, fronts: Sequence[Front], static_root: Path | None = None
) -> Iterator[dict[str, RunningFront]]:
    """One nginx per front, from deploy/nginx.conf: name -> the running front."""
    readable_by_workers(scratch)
    running: dict[str, RunningFront] = {}
    with contextlib.ExitStack() as stack:
        for front in fronts:
            port = free_port()
            # The port too: a section may put a front of the same name up again.
            layout = NginxLayout(prefix=scratch / f"nginx-{front.name.replace(' ', '-')}-{port}")
            conf_text = render_nginx_conf(
                prefix=layout.prefix,
                listen=f"127.0.0.1:{port}",
                upstreams=[f"127.0.0.1:{front.upstream.port}"],
                static_root=static_root if static_root is not None else scratch,
                gunicorn_timeout_seconds=GUNICORN_TIMEOUT_S,
                **front.options,
            )
            prepare_nginx(layout, conf_text=conf_text)
            process = processes.start_nginx(layout)
            stack.callback(processes.stop_nginx, process)
            base_url = f"http://127.0.0.1:{port}"
            processes.wait_until_ready(base_url + "/healthz", process=process, any_status=True)
            running[front.name] = RunningFront(name=front.name, base_url=base_url, layout=layout)
        yield running


@contextlib.contextmanager
def behind_nginx(
    *,
    scratch: Path,
    upstreams: Sequence[RunningServer] = (),
    fronts: Sequence[Front] = (),
    static: StaticBodies | None = None,
) -> Iterator[FrontURLs]:
    """One nginx per upstream (shield raised) and per front: name -> n -> URL.

    With `static`, also `static` (the captured bodies as files) and `static-gz`
    (their gzipped copies, see responses.write_gzipped), from the last nginx.
    """
    print(
        "\nnginx: deploy/nginx.conf rendered by deploy/nginx.py "
        "(limit_req/limit_conn raised out of reach unless a row says so; one nginx per row)"
    )
    sizes = static.sizes if static is not None else SIZES
    every = [*(Front(name=server.name, upstream=server) for server in upstreams), *fronts]
    with nginx_fronts(
        scratch=scratch, fronts=every, static_root=static.root if static is not None else None
    ) as running:
        urls: FrontURLs = {name: api_urls(front.base_url, sizes) for name, front in running.items()}
        if static is not None:
            last = list(running.values())[-1].base_url
            urls[STATIC] = static_urls(last, static.sizes)
            urls[STATIC_GZIP] = static_urls(last, static.sizes, suffix=".gz")
        yield urls
