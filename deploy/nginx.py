"""deploy/nginx.conf rendered for a host: placeholders filled in, checked by `nginx -t`.

The one renderer of the template, used by `make stack`, the end-to-end tests,
the benchmark and production (`python -m deploy render`). Rendering is pure
text: nothing here reads the environment; gunicorn's timeout, the limits and
every path are arguments.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DEPLOY_DIR = Path(__file__).resolve().parent
NGINX_TEMPLATE = DEPLOY_DIR / "nginx.conf"
# The response headers of every answer, written once and placed by {{ security_headers }}.
SECURITY_HEADERS_TEMPLATE = DEPLOY_DIR / "nginx-security-headers.conf"
# nginx's own errors of reading a request, placed by {{ request_errors }} in both servers.
REQUEST_ERRORS_TEMPLATE = DEPLOY_DIR / "nginx-request-errors.conf"
# The edge's sections (deploy/edge/nginx-edge.conf) and its Lua (deploy/edge/fib_edge.lua).
EDGE_DIR = DEPLOY_DIR / "edge"
EDGE_TEMPLATE = EDGE_DIR / "nginx-edge.conf"
# Where Debian's nginx keeps its dynamic modules (libnginx-mod-http-lua and the NDK).
MODULE_DIR = Path("/usr/lib/nginx/modules")
# The host names a local nginx (make stack, tests, bench) serves; any other is refused.
LOCAL_SERVER_NAMES = "localhost 127.0.0.1 [::1]"

# The outer shield in nginx: per client address, far above the app's own
# per-client budget, so that only floods meet it.
DEFAULT_LIMIT_REQ_RATE = "50r/s"
DEFAULT_LIMIT_REQ_BURST = 100
DEFAULT_LIMIT_CONN = 50
# nginx waits this much longer than gunicorn's `timeout` for an answer, so that
# gunicorn, not nginx, ends (and logs) a stuck request.
PROXY_TIMEOUT_MARGIN_SECONDS = 5

_PLACEHOLDER = re.compile(r"\{\{ (\w+) \}\}")


@dataclass(frozen=True, slots=True)
class NginxLayout:
    """Where a rendered nginx keeps its config, pid file, logs and temp files."""

    prefix: Path

    @property
    def conf(self) -> Path:
        """The rendered nginx.conf."""
        return self.prefix / "nginx.conf"

    @property
    def pid_file(self) -> Path:
        """nginx's master pid."""
        return self.prefix / "nginx.pid"

    @property
    def access_log(self) -> Path:
        """nginx's access log: one JSON object per request, with upstream, times and request id."""
        return self.prefix / "access.log"


# The answer cache's bounds: disk, and shared memory for its keys.
DEFAULT_EDGE_CACHE_MAX_SIZE = "1g"
DEFAULT_EDGE_CACHE_KEYS_ZONE = "16m"


@dataclass(frozen=True, slots=True)
class EdgeFiles:
    """The edge's files: the policy the app wrote, the edge log, the answer cache.

    policy: `manage.py edge_policy --output` of the app's environment; log: the
    JSON edge log that `manage.py ship_edge_log` ships; cache_dir: cached
    answers, at most cache_max_size on disk (nginx's size syntax, 1g), their
    keys in cache_keys_zone of shared memory (about 8,000 keys per MB).
    """

    policy: Path
    log: Path
    cache_dir: Path
    cache_max_size: str = DEFAULT_EDGE_CACHE_MAX_SIZE
    cache_keys_zone: str = DEFAULT_EDGE_CACHE_KEYS_ZONE


def edge_sections() -> dict[str, str]:
    """deploy/edge/nginx-edge.conf by section (`# --- name`), without the file's comment."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in EDGE_TEMPLATE.read_text().splitlines():
        if line.startswith("# --- "):
            current = sections.setdefault(line.removeprefix("# --- ").strip(), [])
        elif current is not None:
            current.append(line)
    return {name: "\n".join(lines).strip("\n") for name, lines in sections.items()}


def _edge_blocks(edge: EdgeFiles | None) -> dict[str, str]:
    # answer_headers last: the api and server sections hold its placeholder.
    names = (
        "modules",
        "http",
        "server",
        "api",
        "shield",
        "error",
        "default_server",
        "answer_headers",
    )
    if edge is None:
        off = "# The edge is off: the app counts and logs every API request itself."
        return {f"edge_{name}": off if name in {"modules", "api"} else "" for name in names}
    sections = edge_sections()
    return {f"edge_{name}": sections[name] for name in names}


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """A certificate chain and its key: nginx then serves HTTPS and redirects HTTP to it."""

    certificate: Path
    key: Path


def nginx_user_directive() -> str:
    """`user nobody <group>;` when run as root (nginx's workers drop to it), else nothing."""
    if os.geteuid() != 0:
        return "# Not root: nginx's workers run as the user who started it."
    nobody = pwd.getpwnam("nobody")
    return f"user nobody {grp.getgrgid(nobody.pw_gid).gr_name};"  # as worker_user_ids()


def _tls_directives(tls: TlsFiles | None) -> str:
    if tls is None:
        return "        # Plain HTTP: TLS ends in front of this server, or this is a local run."
    return "\n".join(
        f"        {line}"
        for line in (
            f"ssl_certificate {tls.certificate};",
            f"ssl_certificate_key {tls.key};",
            "ssl_protocols TLSv1.2 TLSv1.3;",
            "ssl_session_cache shared:fib_tls:10m;",
            "ssl_session_timeout 1d;",
        )
    )


def _hsts_directive(tls: TlsFiles | None) -> str:
    # Browsers keep to HTTPS for two years (Django leaves HSTS to us).
    if tls is None:
        return "# No HSTS over plain HTTP."
    return 'add_header Strict-Transport-Security "max-age=63072000" always;'


def security_headers(tls: TlsFiles | None) -> list[str]:
    """The directives of deploy/nginx-security-headers.conf, without its comment."""
    lines = SECURITY_HEADERS_TEMPLATE.read_text().splitlines()
    body = [line for line in lines if line.strip() and not line.startswith("#")]
    return [line.replace("{{ hsts }}", _hsts_directive(tls)) for line in body]


def request_errors() -> list[str]:
    """The lines of deploy/nginx-request-errors.conf, without its opening comment."""
    lines = REQUEST_ERRORS_TEMPLATE.read_text().splitlines()
    while lines and (not lines[0].strip() or lines[0].startswith("#")):
        lines.pop(0)
    return lines


def host_has_ipv6() -> bool:
    """Whether this host can listen on IPv6 (its loopback, ::1, can be bound)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def loopback_listen(port: int) -> list[str]:
    """nginx `listen` values for a local run: 127.0.0.1:port, and [::1]:port where there is IPv6."""
    return [f"127.0.0.1:{port}", *([f"[::1]:{port}"] if host_has_ipv6() else [])]


def default_listen(*, tls: bool) -> list[str]:
    """Production's `listen` values: 80 (or 443 with TLS), on IPv4 and, where there is, IPv6."""
    port = "443 ssl http2" if tls else "80"
    return [port, *([f"[::]:{port}"] if host_has_ipv6() else [])]


def _listen_lines(listen: Sequence[str], *, default_server: bool) -> list[str]:
    suffix = " default_server" if default_server else ""
    return [f"listen {value}{suffix};" for value in listen]


def _redirect_server(tls: TlsFiles | None, server_name: str, *, ipv6: bool) -> str:
    if tls is None:
        return ""
    return (
        "    # Plain HTTP only redirects to HTTPS.\n"
        "    server {\n"
        "        listen 80;\n"
        + ("        listen [::]:80;\n" if ipv6 else "")
        + f"        server_name {server_name};\n"
        "        location / {\n"
        "            return 301 https://$host$request_uri;\n"
        "        }\n"
        "    }\n"
    )


def _real_ip_lines(trusted_proxies: Sequence[str]) -> list[str]:
    if not trusted_proxies:
        return ["# No proxy in front of nginx: the connecting address is the client."]
    return [
        *(f"set_real_ip_from {proxy};" for proxy in trusted_proxies),
        "real_ip_header X-Real-IP;",
    ]


def _indented_block(text: str, *, placeholder: str, lines: Sequence[str]) -> str:
    """Replace each line holding only `{{ placeholder }}` by lines, at that line's indent."""
    pattern = re.compile(r"^([ \t]*)\{\{ " + placeholder + r" \}\}[ \t]*$", flags=re.MULTILINE)
    return pattern.sub(
        lambda match: "\n".join(match.group(1) + line if line else "" for line in lines), text
    )


def render_nginx_conf(
    *,
    prefix: Path,
    listen: str | Sequence[str],
    upstreams: Sequence[str],
    static_root: Path,
    gunicorn_timeout_seconds: int,
    pid_file: Path | None = None,
    log_dir: Path | None = None,
    server_name: str = LOCAL_SERVER_NAMES,
    user: str | None = None,
    limit_req_rate: str = DEFAULT_LIMIT_REQ_RATE,
    limit_req_burst: int = DEFAULT_LIMIT_REQ_BURST,
    limit_conn: int = DEFAULT_LIMIT_CONN,
    tls: TlsFiles | None = None,
    edge: EdgeFiles | None = None,
    trusted_proxies: Sequence[str] = (),
) -> str:
    """deploy/nginx.conf with its placeholders filled in.

    gunicorn_timeout_seconds is the `timeout` the upstream gunicorn runs with
    (read by the caller from the environment gunicorn runs under, never from
    the shell that renders); nginx's proxy timeouts are set longer than it.
    listen is one `listen` value or several (IPv4 and IPv6); server_name the
    host names served, every other being refused by a default server.
    edge: the edge's files, or None for no edge (every API request reaches the app).
    trusted_proxies: addresses or CIDRs of proxies in front of nginx whose
    X-Real-IP names the client (none: the connecting address is the client).
    """
    if not upstreams:
        raise ValueError("nginx needs at least one upstream server")
    if gunicorn_timeout_seconds < 1:
        raise ValueError(f"gunicorn's timeout must be at least 1 s, not {gunicorn_timeout_seconds}")
    proxy_timeout_seconds = gunicorn_timeout_seconds + PROXY_TIMEOUT_MARGIN_SECONDS
    listens = [listen] if isinstance(listen, str) else list(listen)
    if not listens:
        raise ValueError("nginx needs at least one listen address")
    values = {
        "user": user if user is not None else nginx_user_directive(),
        "prefix": str(prefix),
        "pid_file": str(pid_file or NginxLayout(prefix).pid_file),
        "log_dir": str(log_dir or prefix),
        "server_name": server_name,
        "tls": _tls_directives(tls),
        "http_redirect_server": _redirect_server(
            tls, server_name, ipv6=any(value.startswith("[") for value in listens)
        ),
        "static_root": str(static_root).rstrip("/"),
        "upstream_servers": "\n".join(
            f"        server {address} max_fails=1 fail_timeout=5s;" for address in upstreams
        ),
        "limit_req_rate": limit_req_rate,
        "limit_req_burst": str(limit_req_burst),
        "limit_conn": str(limit_conn),
        "gunicorn_timeout": str(gunicorn_timeout_seconds),
        "proxy_timeout": str(proxy_timeout_seconds),
    }
    if edge is not None:
        values |= {
            "module_dir": str(MODULE_DIR),
            "edge_lua_dir": str(EDGE_DIR),
            "edge_policy": str(edge.policy),
            "edge_log": str(edge.log),
            "edge_cache_dir": str(edge.cache_dir),
            "edge_cache_max_size": edge.cache_max_size,
            "edge_cache_keys_zone": edge.cache_keys_zone,
        }
    text = NGINX_TEMPLATE.read_text()
    # First: the edge's sections hold placeholders of their own.
    for placeholder, block in _edge_blocks(edge).items():
        text = _indented_block(text, placeholder=placeholder, lines=block.splitlines())
    blocks = {
        "real_ip": _real_ip_lines(trusted_proxies),
        "server_listen": _listen_lines(listens, default_server=False),
        "default_server_listen": _listen_lines(listens, default_server=True),
        # Before the security headers: the error locations hold that placeholder too.
        "request_errors": request_errors(),
        "security_headers": security_headers(tls),
    }
    for placeholder, lines in blocks.items():
        text = _indented_block(text, placeholder=placeholder, lines=lines)
    text = _PLACEHOLDER.sub(lambda match: values.get(match.group(1), match.group(0)), text)
    if unfilled := _PLACEHOLDER.search(text):
        raise ValueError(f"unfilled placeholder in {NGINX_TEMPLATE}: {unfilled.group(0)}")
    return text


def nginx_binary() -> str:
    """The nginx executable: on PATH, or in /usr/sbin where Debian puts it."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin:/sbin")
    if not found:
        raise FileNotFoundError("nginx is not installed (Debian: apt-get install nginx)")
    return found


def make_world_readable_dir(path: Path) -> Path:
    """Create path (0755) so that nginx workers running as `nobody` can read below it."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    return path


def check_nginx_conf(conf: Path, *, prefix: Path) -> None:
    """Run `nginx -t` on a rendered config; raise with nginx's message if it is rejected."""
    result = subprocess.run(
        [nginx_binary(), "-t", "-q", "-p", str(prefix), "-c", str(conf)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"nginx -t rejected {conf}:\n{result.stderr}")


def worker_user_ids() -> tuple[int, int] | None:
    """The uid and gid nginx's workers run as when started by root (nobody), else None."""
    if os.geteuid() != 0:
        return None
    nobody = pwd.getpwnam("nobody")
    return nobody.pw_uid, nobody.pw_gid


def prepare_edge_files(edge: EdgeFiles) -> None:
    """Create the edge log so that nginx's workers can append to it (the limiter writes
    its aggregate lines from a worker), and the cache directory."""
    edge.log.touch(exist_ok=True)
    edge.cache_dir.mkdir(parents=True, exist_ok=True)
    ids = worker_user_ids()
    if ids is not None:
        os.chown(edge.log, *ids)
        os.chown(edge.cache_dir, *ids)


def prepare_nginx(layout: NginxLayout, *, conf_text: str) -> None:
    """Write the rendered config into the prefix and check it with `nginx -t`."""
    make_world_readable_dir(layout.prefix)
    layout.conf.write_text(conf_text)
    check_nginx_conf(layout.conf, prefix=layout.prefix)
