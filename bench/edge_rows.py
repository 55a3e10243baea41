"""The edge's rows: nginx rendered with the edge (limiter, cache, edge log) in front of the app.

One row per counter store: `edge-redis` (the app's Redis counters) and
`edge-shm` (nginx's shared memory). Each gets its own files under the scratch
directory (the policy written by the app's `manage.py edge_policy` under the
settings the row is for, the edge log, the cache), as `make stack` makes them
(deploy/stack.py), and its own `manage.py ship_edge_log` process (started as
make stack starts it), so that the
rows pay for the whole policy and log: every request is counted, written to
the edge log and shipped into the request log while the row is measured.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from frontend import Front
from servers import RunningServer, base_environment, stop

from deploy import processes
from deploy.nginx import make_world_readable_dir
from deploy.stack import stack_edge

# Row name -> settings on top of the app's that choose the counter store.
EDGE_STORES: Mapping[str, Mapping[str, str | None]] = {
    "edge-redis": {},
    "edge-shm": {"REDIS_URL": None},
}


def _settings(app_settings: Mapping[str, str], store: Mapping[str, str | None]) -> dict[str, str]:
    merged: dict[str, str | None] = {**app_settings, **store}
    return {key: value for key, value in merged.items() if value is not None}


@contextlib.contextmanager
def edge_fronts(
    *,
    scratch: Path,
    upstream: RunningServer,
    app_settings: Mapping[str, str],
    shield: Mapping[str, Any],
    label: str = "",
) -> Iterator[list[Front]]:
    """One Front per EDGE_STORES row in front of `upstream`, each log shipped while in use.

    app_settings are the settings the upstream runs with (the policy tells the
    edge its budgets); shield the nginx limit options on top of which `edge` is set.
    """
    fronts = []
    with contextlib.ExitStack() as running:
        for name, store in EDGE_STORES.items():
            env = base_environment(_settings(app_settings, store))
            prefix = make_world_readable_dir(scratch / f"edge-files-{name}{label}")
            edge = stack_edge(prefix, env=env)
            shipper = processes.start_edge_log_shipper(
                edge.log, env=env, log_path=prefix / "ship_edge_log.out"
            )
            running.callback(stop, shipper)
            fronts.append(Front(name=name, upstream=upstream, options={**shield, "edge": edge}))
        yield fronts
