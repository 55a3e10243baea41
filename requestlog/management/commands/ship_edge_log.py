"""`manage.py ship_edge_log <path>`: nginx's edge log into the request log (requestlog.shipper)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from requestlog.edge_metrics import EdgeMetrics
from requestlog.shipper import DEFAULT_BATCH_LINES, DEFAULT_POLL_SECONDS, EdgeLogShipper

logger = logging.getLogger("requestlog.shipper")


class Command(BaseCommand):
    """Runs until SIGTERM or SIGINT, which end it after the batch in hand (exit status 0)."""

    help = (
        "Tail nginx's edge log (one JSON object per line) into the request log, each line once; "
        "finishes <path>.1 first after a rotation."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="The edge log, e.g. /var/log/nginx/fibonacci-edge.jsonl.")
        parser.add_argument(
            "--once", action="store_true", help="Ship what is there, then exit (for cron or tests)."
        )
        parser.add_argument(
            "--poll-interval",
            type=float,
            default=DEFAULT_POLL_SECONDS,
            help=f"Seconds between looks at the file when idle (default {DEFAULT_POLL_SECONDS}).",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=DEFAULT_BATCH_LINES,
            help=f"Lines per transaction at most (default {DEFAULT_BATCH_LINES}).",
        )
        parser.add_argument(
            "--metrics-port",
            type=int,
            help="Serve the edge's metrics (counted from the log's committed lines) in "
            "Prometheus's text format on this port (default: not served).",
        )
        parser.add_argument(
            "--metrics-address",
            default="127.0.0.1",
            help="The address the metrics are served on (default 127.0.0.1: this host only).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["poll_interval"] <= 0 or options["batch_size"] < 1:
            raise CommandError("--poll-interval must be positive and --batch-size at least 1.")
        port = options["metrics_port"]
        if port is not None and not 1 <= port <= 65535:
            raise CommandError("--metrics-port must be a TCP port (1 to 65535).")
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        metrics = EdgeMetrics() if port is not None else None
        shipper = EdgeLogShipper(
            options["path"], batch_lines=options["batch_size"], metrics=metrics
        )
        stop_serving: Callable[[], None] | None = None
        if metrics is not None:
            try:
                stop_serving = metrics.serve(port, options["metrics_address"])
            except OSError as exc:
                raise CommandError(
                    f"cannot serve metrics on {options['metrics_address']} port {port}: {exc}"
                ) from exc
            logger.info(
                "edge log shipper: metrics on %s port %d (/metrics)",
                options["metrics_address"],
                port,
            )
        try:
            shipper.run(stop=stop, poll_seconds=options["poll_interval"], once=options["once"])
        except (DatabaseError, OSError) as exc:  # --once only: the loop retries otherwise
            raise CommandError(f"could not ship {shipper.path}: {exc}") from exc
        finally:
            shipper.close()
            if stop_serving is not None:
                stop_serving()
        self.stdout.write(
            f"Shipped {shipper.shipped_lines} lines of {shipper.path}"
            f" ({shipper.skipped_lines} skipped)."
        )
