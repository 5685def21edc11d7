"""The gateway's server: uvicorn's, except that a second signal skips only the grace period.

uvicorn stops in two steps: on a first signal (SIGTERM, Ctrl-C) it lets requests in flight
finish within ``timeout_graceful_shutdown``, then ends the rest and runs the app's
shutdown; on a second it skips both. The gateway's shutdown is what meters the requests it
ended (with the workers' final counts), stops the workers and stores the usage records,
and it is bounded (``app.SETTLE_S``), so here a second signal skips the grace period only:
the requests still in flight are ended at once, as when the grace period is over, and the
shutdown runs. Without it, a process stopped by SIGTERM would die by that signal (uvicorn
raises it again on its way out) before the ended requests were metered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.config import Config

logger = logging.getLogger(__name__)
STARTUP_FAILURE = 3  # uvicorn's exit status when the app did not start


class GatewayServer(uvicorn.Server):
    """uvicorn's server with the second signal's stop described in the module docstring,
    and calls once it listens (``on_started``) and once it has stopped (``on_stopped``:
    uvicorn raises a stopping signal again on its way out, so the caller's own code after
    ``run`` does not run then)."""

    on_started: Callable[[], None] | None = None
    on_stopped: Callable[[], None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.on_started is not None:
            self.on_started()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await self._shutdown(sockets)
        finally:
            if self.on_stopped is not None:
                self.on_stopped()

    async def _shutdown(self, sockets: list[socket.socket] | None) -> None:
        await super().shutdown(sockets)
        done = getattr(self.lifespan, "shutdown_event", None)
        if not self.force_exit or done is None or done.is_set():
            return  # a graceful stop, or the app's shutdown ran (the signal came during it)
        tasks = list(self.server_state.tasks)
        logger.warning(
            "stopped at once (a second signal): %d request(s) in flight ended", len(tasks)
        )
        for task in tasks:
            task.cancel(msg="the gateway was stopped at once")
        if tasks:
            await asyncio.wait(tasks)  # each ends its request, meters it, tells its client
        await self.lifespan.shutdown()


def run(
    app: Any,
    on_started: Callable[[], None] | None = None,
    on_stopped: Callable[[], None] | None = None,
    **options: Any,
) -> None:
    """Serve ``app`` as ``uvicorn.run`` would (``options`` are ``uvicorn.Config``'s), with
    :class:`GatewayServer`, calling ``on_started`` once it listens and ``on_stopped`` once
    it has stopped."""
    server = GatewayServer(Config(app, **options))
    server.on_started, server.on_stopped = on_started, on_stopped
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
