"""gunicorn's sync worker, which on SIGTERM first answers the connections already queued for it.

On SIGTERM gunicorn's master closes its copy of the listening socket and
tells each worker to finish its request and exit. The socket itself stays open
in the workers until the last one exits, so the kernel keeps completing
connections into its accept queue; the stock worker leaves them there, and
they are reset when it exits (nginx answers them 502, or retries them on
another server if it has one). This worker accepts and serves what is queued
before it exits: a stop loses no request that had reached gunicorn.

Connections that arrive after the queue was found empty are still refused,
which is why nginx must stop sending first (`make stack` stops nginx before
gunicorn; deploy/fibonacci.service orders itself Before=nginx.service).
"""

from __future__ import annotations

import errno
import time
from types import FrameType

from gunicorn.workers.sync import SyncWorker

# errno values of a non-blocking accept() that mean "nothing to take right now".
_NOTHING_QUEUED = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ECONNABORTED})


class DrainingSyncWorker(SyncWorker):
    """A sync worker that, told to stop by SIGTERM, serves its accept queue until it is empty."""

    _terminated = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """SIGTERM: finish the current request, then drain (SIGQUIT and SIGINT still quit)."""
        self._terminated = True
        super().handle_exit(sig, frame)

    def run(self) -> None:
        """gunicorn's loop, then, after a SIGTERM, the drain."""
        super().run()
        if self._terminated:
            self.drain_accept_queue()

    def drain_accept_queue(self) -> int:
        """Serve queued connections until none is waiting; return how many were served.

        Bounded by half the graceful timeout: under a flood that never lets the
        queue empty, the worker still exits, and flushes its request log, before
        the master's SIGKILL at graceful_timeout.
        """
        deadline = time.monotonic() + self.cfg.graceful_timeout / 2
        served = 0
        while time.monotonic() < deadline:
            served_this_pass = 0
            for listener in self.sockets:
                self.notify()  # the heartbeat, as gunicorn's own loop sends it
                try:
                    self.accept(listener)  # the socket is non-blocking since run()
                except OSError as exc:
                    if exc.errno not in _NOTHING_QUEUED:
                        raise
                    continue
                served_this_pass += 1
            if not served_this_pass:
                break
            served += served_this_pass
        if served:
            self.log.info("Answered %d queued connection(s) before exiting", served)
        return served
