"""`manage.py ship_edge_log <path>`: nginx's edge log into the request log (requestlog.shipper)."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from requestlog.shipper import DEFAULT_BATCH_LINES, DEFAULT_POLL_SECONDS, EdgeLogShipper


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

    def handle(self, *args: Any, **options: Any) -> None:
        if options["poll_interval"] <= 0 or options["batch_size"] < 1:
            raise CommandError("--poll-interval must be positive and --batch-size at least 1.")
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        shipper = EdgeLogShipper(options["path"], batch_lines=options["batch_size"])
        try:
            shipper.run(stop=stop, poll_seconds=options["poll_interval"], once=options["once"])
        except (DatabaseError, OSError) as exc:  # --once only: the loop retries otherwise
            raise CommandError(f"could not ship {shipper.path}: {exc}") from exc
        finally:
            shipper.close()
        self.stdout.write(
            f"Shipped {shipper.shipped_lines} lines of {shipper.path}"
            f" ({shipper.skipped_lines} skipped)."
        )
