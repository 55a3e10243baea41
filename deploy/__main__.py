"""The command line of deploy/: `python -m deploy stack` (what `make stack` runs) and `render`.

    python -m deploy stack [--port 8080] [--app-port 8001] [--edge-metrics-port 9145] [--limit-...]
    python -m deploy render --env-file /etc/fibonacci/env --upstream 127.0.0.1:8000 \\
        --static-root /srv/fibonacci/static --server-name api.example.com [--tls-...] [--limit-...]
        [--no-edge | --edge-policy ... --edge-log ... --edge-cache-dir ...]

Run from the checkout. Every option belongs to its subcommand and is given
after it; `render` prints the nginx config for a production host, with
gunicorn's timeout read from the service's environment file (as gunicorn
reads it) or given as --gunicorn-timeout.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from deploy.envfile import EnvFileError, read_env_file
from deploy.nginx import (
    DEFAULT_EDGE_CACHE_MAX_SIZE,
    DEFAULT_LIMIT_CONN,
    DEFAULT_LIMIT_REQ_BURST,
    DEFAULT_LIMIT_REQ_RATE,
    EdgeFiles,
    TlsFiles,
    default_listen,
    render_nginx_conf,
)
from deploy.processes import gunicorn_setting
from deploy.stack import run_stack
from fibonacci.ratelimit.identity import UNIX_SOCKET, parse_trusted_proxies
from fibproject.env import parse_int


def _positive_int(text: str) -> int:
    try:
        return parse_int(text, minimum=1)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _network(text: str) -> str:
    """An address or CIDR, as FIB_TRUSTED_PROXIES reads them (fibonacci.ratelimit.identity)."""
    try:
        parse_trusted_proxies([text])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if text == UNIX_SOCKET:
        raise argparse.ArgumentTypeError("nginx's clients come over TCP: an address or CIDR")
    return text


def _add_limit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--limit-req-rate",
        default=DEFAULT_LIMIT_REQ_RATE,
        help=f"nginx requests per client address (default {DEFAULT_LIMIT_REQ_RATE})",
    )
    parser.add_argument(
        "--limit-req-burst",
        type=int,
        default=DEFAULT_LIMIT_REQ_BURST,
        help=f"requests over the rate served at once (default {DEFAULT_LIMIT_REQ_BURST})",
    )
    parser.add_argument(
        "--limit-conn",
        type=int,
        default=DEFAULT_LIMIT_CONN,
        help=f"nginx connections per client address (default {DEFAULT_LIMIT_CONN}); "
        "raise all three to benchmark from one host",
    )


def build_parser() -> argparse.ArgumentParser:
    """The parser: a required subcommand, each with its own options."""
    parser = argparse.ArgumentParser(
        prog="python -m deploy", description=(__doc__ or "").splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{stack,render}")

    stack = commands.add_parser(
        "stack", help="nginx + gunicorn as in production on 127.0.0.1 until Ctrl-C (make stack)"
    )
    stack.add_argument("--port", type=int, default=8080, help="nginx port (default 8080)")
    stack.add_argument(
        "--app-port", type=int, default=8001, help="gunicorn port on loopback (default 8001)"
    )
    stack.add_argument(
        "--no-edge",
        dest="edge",
        action="store_false",
        help="no limiter or cache in nginx: every API request reaches the app (docs/edge.md)",
    )
    stack.add_argument(
        "--edge-metrics-port",
        type=int,
        default=9145,
        help="loopback port of the edge's metrics, served by the edge log shipper "
        "(default 9145, as deploy/prometheus/prometheus.yml scrapes)",
    )
    _add_limit_options(stack)

    render = commands.add_parser("render", help="print deploy/nginx.conf rendered for a host")
    timeout = render.add_mutually_exclusive_group(required=True)
    timeout.add_argument(
        "--env-file",
        type=Path,
        help="the service's environment file (systemd EnvironmentFile=, e.g. /etc/fibonacci/env): "
        "gunicorn's timeout is read from its GUNICORN_TIMEOUT as gunicorn.conf.py reads it",
    )
    timeout.add_argument(
        "--gunicorn-timeout",
        type=_positive_int,
        metavar="SECONDS",
        help="gunicorn's timeout, when it is not set by an environment file",
    )
    render.add_argument(
        "--listen",
        action="append",
        help="nginx `listen`; repeat for several (default 80, or `443 ssl http2` with "
        "--tls-certificate, on IPv4 and, where the host has it, IPv6)",
    )
    render.add_argument("--tls-certificate", help="certificate chain: serve HTTPS, redirect HTTP")
    render.add_argument("--tls-key", help="the certificate's private key")
    render.add_argument(
        "--server-name",
        required=True,
        help="nginx `server_name`: the host names served (space-separated); others get 421",
    )
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
    render.add_argument(
        "--trusted-proxy",
        action="append",
        default=[],
        type=_network,
        metavar="CIDR",
        help="a proxy in front of nginx whose X-Real-IP names the client (a load balancer); "
        "repeat for several (default: none, the connecting address is the client)",
    )
    edge = render.add_argument_group("the edge (docs/edge.md)")
    edge.add_argument(
        "--no-edge",
        dest="edge",
        action="store_false",
        help="no limiter or cache in nginx: every API request reaches the app",
    )
    edge.add_argument(
        "--edge-policy",
        type=Path,
        default=Path("/etc/nginx/fibonacci-edge-policy.lua"),
        help="what `manage.py edge_policy --output` wrote (default %(default)s)",
    )
    edge.add_argument(
        "--edge-log",
        type=Path,
        default=Path("/var/log/nginx/fibonacci-edge.jsonl"),
        help="the edge log that ship_edge_log ships (default %(default)s)",
    )
    edge.add_argument(
        "--edge-cache-dir",
        type=Path,
        default=Path("/var/cache/nginx/fibonacci"),
        help="cached answers (default %(default)s)",
    )
    edge.add_argument(
        "--edge-cache-max-size",
        default=DEFAULT_EDGE_CACHE_MAX_SIZE,
        help="disk the cached answers may take, in nginx's units (default %(default)s)",
    )
    _add_limit_options(render)
    return parser


def gunicorn_timeout_from(env_file: Path) -> int:
    """gunicorn's `timeout` under the variables of env_file alone, as systemd would start it."""
    return gunicorn_setting("timeout", read_env_file(env_file))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the subcommand; argparse exits 2 on a bad command line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "stack":
        return run_stack(
            port=args.port,
            app_port=args.app_port,
            limit_req_rate=args.limit_req_rate,
            limit_req_burst=args.limit_req_burst,
            limit_conn=args.limit_conn,
            edge=args.edge,
            edge_metrics_port=args.edge_metrics_port,
        )

    if bool(args.tls_certificate) != bool(args.tls_key):
        parser.error("--tls-certificate and --tls-key go together")
    if args.env_file is not None:
        try:
            gunicorn_timeout = gunicorn_timeout_from(args.env_file)
        except (OSError, EnvFileError, ImproperlyConfigured) as exc:
            parser.error(f"--env-file {args.env_file}: {exc}")
    else:
        gunicorn_timeout = args.gunicorn_timeout
    tls = TlsFiles(Path(args.tls_certificate), Path(args.tls_key)) if args.tls_key else None
    edge = (
        EdgeFiles(
            policy=args.edge_policy,
            log=args.edge_log,
            cache_dir=args.edge_cache_dir,
            cache_max_size=args.edge_cache_max_size,
        )
        if args.edge
        else None
    )
    sys.stdout.write(
        render_nginx_conf(
            prefix=Path(args.prefix),
            listen=args.listen or default_listen(tls=tls is not None),
            pid_file=Path(args.pid_file),
            log_dir=Path(args.log_dir),
            upstreams=args.upstream,
            static_root=Path(args.static_root),
            gunicorn_timeout_seconds=gunicorn_timeout,
            server_name=args.server_name,
            user=f"user {args.user};",
            tls=tls,
            edge=edge,
            trusted_proxies=args.trusted_proxy,
            limit_req_rate=args.limit_req_rate,
            limit_req_burst=args.limit_req_burst,
            limit_conn=args.limit_conn,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
