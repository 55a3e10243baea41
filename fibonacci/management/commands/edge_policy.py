"""`manage.py edge_policy --output FILE`: the edge's policy (fibonacci.edge_policy) for nginx."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from fibonacci.edge_policy import edge_policy_lua


class Command(BaseCommand):
    help = (
        "Write what nginx's edge limiter needs of the app's settings (budgets, the large "
        "rule, counters) as a Lua file; nginx reads it when it starts or reloads."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--output", type=Path, help="Where to write it (default: stdout).")

    def handle(self, *args: Any, output: Path | None = None, **options: Any) -> None:
        text = edge_policy_lua()
        if output is None:
            self.stdout.write(text, ending="")
            return
        # Replaced whole, so a reloading nginx never reads half a file.
        fd, temporary = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.")
        with os.fdopen(fd, "w") as file:
            file.write(text)
        # It may hold the Redis password: for its owner (nginx's master, root) alone.
        os.chmod(temporary, 0o600)
        os.replace(temporary, output)
