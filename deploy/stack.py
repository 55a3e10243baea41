#!/usr/bin/env python3
"""The production stack on one machine, without root: nginx in front of gunicorn.

`make stack` (this script with no subcommand) renders deploy/nginx.conf into a
temporary prefix, runs collectstatic and migrate, starts gunicorn and nginx,
and serves on http://127.0.0.1:8080/ until Ctrl-C or SIGTERM, which stops
nginx, then gunicorn gracefully (flushing the request log), by process id.
`deploy/stack.py render` prints the nginx config for a production host.

The end-to-end tests import this file and start their processes with the same
functions, so what they test is what `make stack` runs.
"""

from __future__ import annotations

import argparse
import ctypes
import grp
import os
import pwd
import runpy
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

DEPLOY_DIR = Path(__file__).resolve().parent
PROJECT_DIR = DEPLOY_DIR.parent
NGINX_TEMPLATE = DEPLOY_DIR / "nginx.conf"
GUNICORN_CONF = DEPLOY_DIR / "gunicorn.conf.py"

# The outer shield in nginx: per client address, far above the app's own
# per-client budget, so that only floods meet it.
DEFAULT_LIMIT_REQ_RATE = "50r/s"
DEFAULT_LIMIT_REQ_BURST = 100
DEFAULT_LIMIT_CONN = 50
# nginx waits this much longer than gunicorn's `timeout` for an answer.
PROXY_TIMEOUT_MARGIN_SECONDS = 5


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
        """nginx's access log: one line per request with upstream, times and request id."""
        return self.prefix / "access.log"


def gunicorn_setting(name: str, env: Mapping[str, str] | None = None) -> int:
    """A numeric setting (`timeout`, `workers`) as deploy/gunicorn.conf.py computes it under env."""
    saved = dict(os.environ)
    try:
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        return int(runpy.run_path(str(GUNICORN_CONF))[name])
    finally:
        os.environ.clear()
        os.environ.update(saved)


def nginx_user_directive() -> str:
    """`user nobody <group>;` when run as root (nginx's workers drop to it), else nothing."""
    if os.geteuid() != 0:
        return "# Not root: nginx's workers run as the user who started it."
    nobody = pwd.getpwnam("nobody")
    return f"user nobody {grp.getgrgid(nobody.pw_gid).gr_name};"


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """A certificate chain and its key: nginx then serves HTTPS and redirects HTTP to it."""

    certificate: Path
    key: Path


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
    # Browsers keep to HTTPS for two years (Django leaves HSTS to us). Repeated
    # in every location that sets headers of its own, which replace the server's.
    if tls is None:
        return "# No HSTS over plain HTTP."
    return 'add_header Strict-Transport-Security "max-age=63072000" always;'


def _redirect_server(tls: TlsFiles | None, server_name: str) -> str:
    if tls is None:
        return ""
    return (
        "    # Plain HTTP only redirects to HTTPS.\n"
        "    server {\n"
        "        listen 80;\n"
        f"        server_name {server_name};\n"
        "        location / {\n"
        "            return 301 https://$host$request_uri;\n"
        "        }\n"
        "    }\n"
    )


def render_nginx_conf(
    *,
    prefix: Path,
    listen: str,
    pid_file: Path | None = None,
    log_dir: Path | None = None,
    upstreams: Sequence[str],
    static_root: Path,
    server_name: str = "_",
    user: str | None = None,
    limit_req_rate: str = DEFAULT_LIMIT_REQ_RATE,
    limit_req_burst: int = DEFAULT_LIMIT_REQ_BURST,
    limit_conn: int = DEFAULT_LIMIT_CONN,
    gunicorn_timeout: int | None = None,
    tls: TlsFiles | None = None,
) -> str:
    """deploy/nginx.conf with its `{{ name }}` placeholders filled in."""
    if not upstreams:
        raise ValueError("nginx needs at least one upstream server")
    timeout = gunicorn_setting("timeout") if gunicorn_timeout is None else gunicorn_timeout
    values = {
        "user": user if user is not None else nginx_user_directive(),
        "prefix": str(prefix),
        "pid_file": str(pid_file or NginxLayout(prefix).pid_file),
        "log_dir": str(log_dir or prefix),
        "listen": listen,
        "server_name": server_name,
        "tls": _tls_directives(tls),
        "hsts": _hsts_directive(tls),
        "http_redirect_server": _redirect_server(tls, server_name),
        "static_root": str(static_root).rstrip("/"),
        "upstream_servers": "\n".join(
            f"        server {address} max_fails=1 fail_timeout=5s;" for address in upstreams
        ),
        "limit_req_rate": limit_req_rate,
        "limit_req_burst": str(limit_req_burst),
        "limit_conn": str(limit_conn),
        "gunicorn_timeout": str(timeout),
        "proxy_timeout": str(timeout + PROXY_TIMEOUT_MARGIN_SECONDS),
    }
    text = NGINX_TEMPLATE.read_text()
    for name, value in values.items():
        text = text.replace("{{ " + name + " }}", value)
    if "{{" in text:
        raise ValueError(
            f"unfilled placeholder in {NGINX_TEMPLATE}: {text[text.index('{{') :][:40]}"
        )
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


def prepare_nginx(layout: NginxLayout, *, conf_text: str) -> None:
    """Write the rendered config into the prefix and check it with `nginx -t`."""
    make_world_readable_dir(layout.prefix)
    layout.conf.write_text(conf_text)
    result = subprocess.run(
        [nginx_binary(), "-t", "-q", "-p", str(layout.prefix), "-c", str(layout.conf)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"nginx -t rejected {layout.conf}:\n{result.stderr}")


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, get SIGTERM when the starting thread dies.

    Children run in sessions of their own (so that Ctrl-C reaches only this
    script, which stops them in order); this keeps a SIGKILLed launcher from
    leaving them running.
    """
    if sys.platform == "linux":
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def start_nginx(layout: NginxLayout) -> subprocess.Popen[bytes]:
    """Start nginx in the foreground (`daemon off`) in its own session; stop it by pid."""
    return subprocess.Popen(
        [
            nginx_binary(),
            "-p",
            str(layout.prefix),
            "-c",
            str(layout.conf),
            "-g",
            "daemon off;",
        ],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )


def start_gunicorn(
    *, env: Mapping[str, str], log_path: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start gunicorn with deploy/gunicorn.conf.py in its own process group.

    Its own group means a terminal's Ctrl-C reaches only this script, which
    then stops gunicorn gracefully, and a test can SIGKILL the whole instance
    (master and workers) as a crashed machine would die.
    """
    output = log_path.open("ab") if log_path is not None else None
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF)],
            cwd=PROJECT_DIR,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT if output is not None else None,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    finally:
        if output is not None:
            output.close()


def wait_until_ready(
    url: str,
    *,
    process: subprocess.Popen[bytes],
    timeout_seconds: float = 30.0,
) -> None:
    """Poll url until it answers 200; fail early if process exits."""
    deadline = time.monotonic() + timeout_seconds
    request = urllib.request.Request(url, headers={"Host": "127.0.0.1"})
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"process {process.pid} exited ({process.returncode}) before {url}")
        try:
            with urllib.request.urlopen(request, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer 200 within {timeout_seconds} s")
        time.sleep(0.05)


def stop_process(
    process: subprocess.Popen[bytes], *, graceful_signal: int, timeout_seconds: float
) -> int:
    """Send graceful_signal to process by its pid, wait; SIGKILL its group if it lingers."""
    if process.poll() is None:
        process.send_signal(graceful_signal)
        try:
            process.wait(timeout=timeout_seconds)
        except subprocess.TimeoutExpired:
            # Its own session: the group id is its pid, and holds only what it started.
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


def stop_nginx(process: subprocess.Popen[bytes]) -> int:
    """SIGQUIT: nginx stops accepting and finishes the requests in flight."""
    return stop_process(process, graceful_signal=signal.SIGQUIT, timeout_seconds=10)


def stop_gunicorn(process: subprocess.Popen[bytes], *, graceful_timeout: float = 35) -> int:
    """SIGTERM: workers finish their request and flush the request log, then exit."""
    return stop_process(process, graceful_signal=signal.SIGTERM, timeout_seconds=graceful_timeout)


def worker_pids(master_pid: int) -> list[int]:
    """The pids of a gunicorn master's workers (its child processes), sorted."""
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children")
    if children.exists():
        return sorted(int(pid) for pid in children.read_text().split())
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended while we looked
        if int(fields[1]) == master_pid:
            found.append(int(stat.parent.name))
    return sorted(found)


def manage(*args: str, env: Mapping[str, str]) -> None:
    """Run a manage.py command with env, failing loudly."""
    subprocess.run([sys.executable, "manage.py", *args], cwd=PROJECT_DIR, env=dict(env), check=True)


def stack_environment(*, prefix: Path, app_bind: str) -> dict[str, str]:
    """The process environment of `make stack`: production settings, local defaults."""
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "fibproject.settings"
    env.setdefault("DJANGO_DEBUG", "false")
    # A fresh key per run: sessions do not outlive the stack, which is fine locally.
    env.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
    env.setdefault("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost")
    # Plain HTTP on loopback: Secure cookies would lock the admin out.
    env.setdefault("DJANGO_SECURE_COOKIES", "false")
    env.setdefault("DJANGO_STATIC_ROOT", str(prefix / "static"))
    # nginx connects from loopback; X-Real-IP is believed only from it.
    env.setdefault("FIB_TRUSTED_PROXIES", "127.0.0.1")
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


def run_stack(
    *, port: int, app_port: int, limit_req_rate: str, limit_req_burst: int, limit_conn: int
) -> int:
    """Serve the stack on 127.0.0.1:port until SIGINT or SIGTERM; return the exit status."""
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
        conf_text = render_nginx_conf(
            prefix=prefix,
            listen=f"127.0.0.1:{port}",
            upstreams=[f"127.0.0.1:{app_port}"],
            static_root=static_root,
            gunicorn_timeout=gunicorn_setting("timeout", env),
            limit_req_rate=limit_req_rate,
            limit_req_burst=limit_req_burst,
            limit_conn=limit_conn,
        )
        prepare_nginx(layout, conf_text=conf_text)
        gunicorn = start_gunicorn(env=env)
        processes.append(("gunicorn", gunicorn))
        wait_until_ready(f"http://127.0.0.1:{app_port}/healthz", process=gunicorn)
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
    except (subprocess.CalledProcessError, RuntimeError, TimeoutError) as exc:
        print(f"stack: {exc}", file=sys.stderr)
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # nginx first, so that nothing new reaches gunicorn while it drains.
        for name, process in reversed(processes):
            if name == "nginx":
                stop_nginx(process)
            else:
                stop_gunicorn(process)
        print("stack: stopped", flush=True)
        shutil.rmtree(prefix, ignore_errors=True)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run the stack (default) or render the nginx config."""
    limits = argparse.ArgumentParser(add_help=False)
    limits.add_argument(
        "--limit-req-rate",
        default=DEFAULT_LIMIT_REQ_RATE,
        help=f"nginx requests per client address (default {DEFAULT_LIMIT_REQ_RATE})",
    )
    limits.add_argument(
        "--limit-req-burst",
        type=int,
        default=DEFAULT_LIMIT_REQ_BURST,
        help=f"requests over the rate served at once (default {DEFAULT_LIMIT_REQ_BURST})",
    )
    limits.add_argument(
        "--limit-conn",
        type=int,
        default=DEFAULT_LIMIT_CONN,
        help=f"nginx connections per client address (default {DEFAULT_LIMIT_CONN}); "
        "raise all three to benchmark from one host",
    )
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[limits])
    parser.add_argument("--port", type=int, default=8080, help="nginx port (default 8080)")
    parser.add_argument(
        "--app-port", type=int, default=8001, help="gunicorn port on loopback (default 8001)"
    )
    commands = parser.add_subparsers(dest="command")
    render = commands.add_parser(
        "render", parents=[limits], help="print deploy/nginx.conf rendered for a host"
    )
    render.add_argument(
        "--listen", help="nginx `listen` (default 80, or `443 ssl http2` with --tls-certificate)"
    )
    render.add_argument("--tls-certificate", help="certificate chain: serve HTTPS, redirect HTTP")
    render.add_argument("--tls-key", help="the certificate's private key")
    render.add_argument("--server-name", default="_", help="nginx `server_name`")
    render.add_argument(
        "--upstream",
        action="append",
        required=True,
        help="a gunicorn address (host:port or unix:/path); repeat for several",
    )
    render.add_argument("--static-root", required=True, help="DJANGO_STATIC_ROOT")
    render.add_argument("--prefix", default="/var/lib/nginx", help="nginx's temp files")
    render.add_argument("--pid-file", default="/run/nginx.pid", help="as in nginx.service")
    render.add_argument("--log-dir", default="/var/log/nginx", help="error.log, access.log")
    render.add_argument("--user", default="www-data", help="the user nginx's workers run as")
    args = parser.parse_args(argv)
    nginx_limits = {
        "limit_req_rate": args.limit_req_rate,
        "limit_req_burst": args.limit_req_burst,
        "limit_conn": args.limit_conn,
    }
    if args.command == "render":
        if bool(args.tls_certificate) != bool(args.tls_key):
            parser.error("--tls-certificate and --tls-key go together")
        tls = TlsFiles(Path(args.tls_certificate), Path(args.tls_key)) if args.tls_key else None
        listen = args.listen or ("443 ssl http2" if tls else "80")
        sys.stdout.write(
            render_nginx_conf(
                prefix=Path(args.prefix),
                listen=listen,
                pid_file=Path(args.pid_file),
                log_dir=Path(args.log_dir),
                upstreams=args.upstream,
                static_root=Path(args.static_root),
                server_name=args.server_name,
                user=f"user {args.user};",
                tls=tls,
                **nginx_limits,
            )
        )
        return 0
    return run_stack(port=args.port, app_port=args.app_port, **nginx_limits)


if __name__ == "__main__":
    sys.exit(main())
