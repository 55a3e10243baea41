"""nginx in front of the servers under test, rendered into a scratch prefix (never /etc/nginx).

Preferred: deploy/nginx.conf rendered by deploy/stack.py's `render_nginx_conf`,
one nginx per upstream, so the benchmark measures the shipped proxy config
(buffering, access log, limit_req and limit_conn, security headers); its
per-IP shield is raised out of reach, since every wrk connection comes from
127.0.0.1. The static file is served by that config's own `/static/` location.
Fallback, when the template is missing or cannot be rendered: one minimal
nginx with a proxy server per upstream and a static server for the API URL.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from responses import API_PATH, body_file_name, url_path
from servers import PROJECT_DIR, RunningServer, free_port, nginx

DEPLOY_STACK = PROJECT_DIR / "deploy" / "stack.py"
DEPLOY_NGINX = PROJECT_DIR / "deploy" / "nginx.conf"
# Far above anything wrk sends from its single address.
SHIELD_OFF = {"limit_req_rate": "1000000r/s", "limit_req_burst": 1_000_000, "limit_conn": 10_000}
STATIC = "static"

_PROXY_SERVER = """
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream_port};
            proxy_set_header Host $host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $remote_addr;
        }}
    }}
"""
_STATIC_SERVER = """
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location = {api_path} {{
            default_type "{content_type}";
            try_files /n-$arg_n.json =404;
        }}
    }}
"""
_MINIMAL_CONF = """
worker_processes auto;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    server_tokens off;
    sendfile on;
    types {{ }}
    client_body_temp_path {prefix}/temp/body;
    proxy_temp_path {prefix}/temp/proxy;
    fastcgi_temp_path {prefix}/temp/fastcgi;
    uwsgi_temp_path {prefix}/temp/uwsgi;
    scgi_temp_path {prefix}/temp/scgi;
{servers}
}}
"""

# name -> n -> URL through nginx
FrontURLs = dict[str, dict[int, str]]


@dataclass(frozen=True)
class StaticBodies:
    """Captured bodies to serve as static files, and their Content-Type."""

    root: Path
    content_type: str
    sizes: Sequence[int]


def deploy_renderer() -> tuple[ModuleType | None, str]:
    """deploy/stack.py loaded as a module when it can render deploy/nginx.conf, and why not."""
    if not (DEPLOY_STACK.exists() and DEPLOY_NGINX.exists()):
        return None, "deploy/nginx.conf or deploy/stack.py missing"
    spec = importlib.util.spec_from_file_location("fib_deploy_stack", DEPLOY_STACK)
    if spec is None or spec.loader is None:
        return None, "deploy/stack.py cannot be loaded"
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # noqa: BLE001 - someone else's file, possibly mid-edit
        return None, f"deploy/stack.py failed to import ({error!r})"
    if not hasattr(module, "render_nginx_conf"):
        return None, "deploy/stack.py has no render_nginx_conf"
    return module, "deploy/nginx.conf rendered by deploy/stack.py"


def readable_by_workers(root: Path) -> None:
    """Open the scratch tree to nginx's unprivileged workers (mkdtemp makes it 0700)."""
    for directory, _, files in os.walk(root):
        os.chmod(directory, 0o755)
        for name in files:
            os.chmod(Path(directory) / name, 0o644)


def render_deploy(
    renderer: ModuleType, *, prefix: Path, port: int, upstream: RunningServer, static_root: Path
) -> Path:
    """deploy/nginx.conf for one upstream, listening on `port`, written into `prefix`."""
    prefix.mkdir(parents=True, exist_ok=True)
    text: str = renderer.render_nginx_conf(
        prefix=prefix,
        listen=f"127.0.0.1:{port}",
        upstreams=[f"127.0.0.1:{upstream.port}"],
        static_root=static_root,
        gunicorn_timeout=120,
        **SHIELD_OFF,
    )
    conf_path = prefix / "nginx.conf"
    conf_path.write_text(text)
    return conf_path


def render_minimal(
    *, prefix: Path, proxies: dict[int, int], static: StaticBodies, port: int
) -> Path:
    """One nginx.conf: a proxy server per (port -> upstream port), plus the static server."""
    (prefix / "temp").mkdir(parents=True, exist_ok=True)
    servers = [_PROXY_SERVER.format(port=p, upstream_port=up) for p, up in proxies.items()]
    servers.append(
        _STATIC_SERVER.format(
            port=port, root=static.root, api_path=API_PATH, content_type=static.content_type
        )
    )
    conf_path = prefix / "nginx.conf"
    conf_path.write_text(_MINIMAL_CONF.format(prefix=prefix, servers="".join(servers)))
    return conf_path


def api_urls(port: int, sizes: Sequence[int]) -> dict[int, str]:
    """n -> the API URL on 127.0.0.1:port."""
    return {n: f"http://127.0.0.1:{port}{url_path(n)}" for n in sizes}


@contextlib.contextmanager
def deploy_frontends(
    renderer: ModuleType,
    *,
    scratch: Path,
    upstreams: Sequence[RunningServer],
    static: StaticBodies,
) -> Iterator[FrontURLs]:
    """One nginx per upstream from deploy/nginx.conf; the last one also serves the static files."""
    urls: FrontURLs = {}
    with contextlib.ExitStack() as stack:
        for server in upstreams:
            port = free_port()
            prefix = scratch / f"nginx-{server.name}"
            conf = render_deploy(
                renderer, prefix=prefix, port=port, upstream=server, static_root=static.root
            )
            readable_by_workers(scratch)
            stack.enter_context(nginx(prefix=prefix, conf_path=conf, ports=[port]))
            urls[server.name] = api_urls(port, static.sizes)
            urls[STATIC] = {
                n: f"http://127.0.0.1:{port}/static/{body_file_name(n)}" for n in static.sizes
            }
        yield urls


@contextlib.contextmanager
def minimal_frontend(
    *, scratch: Path, upstreams: Sequence[RunningServer], static: StaticBodies
) -> Iterator[FrontURLs]:
    """One minimal nginx: a port per upstream and one for the static files."""
    prefix = scratch / "nginx-minimal"
    ports = {server.name: free_port() for server in upstreams}
    static_port = free_port()
    conf = render_minimal(
        prefix=prefix,
        proxies={ports[server.name]: server.port for server in upstreams},
        static=static,
        port=static_port,
    )
    readable_by_workers(scratch)
    with nginx(prefix=prefix, conf_path=conf, ports=[*ports.values(), static_port]):
        urls = {name: api_urls(port, static.sizes) for name, port in ports.items()}
        urls[STATIC] = api_urls(static_port, static.sizes)
        yield urls


def behind_nginx(
    *, scratch: Path, upstreams: Sequence[RunningServer], static: StaticBodies
) -> contextlib.AbstractContextManager[FrontURLs]:
    """nginx before `upstreams` plus a static server: name -> n -> URL; prints which config."""
    renderer, reason = deploy_renderer()
    if renderer is not None:
        print(
            f"\nnginx: {reason} (limit_req/limit_conn raised out of reach; one nginx per upstream)"
        )
        return deploy_frontends(renderer, scratch=scratch, upstreams=upstreams, static=static)
    print(f"\nnginx: bench's own minimal config ({reason})")
    return minimal_frontend(scratch=scratch, upstreams=upstreams, static=static)
