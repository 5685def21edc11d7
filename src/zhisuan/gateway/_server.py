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
from typing import Any

import uvicorn
from uvicorn.config import Config

logger = logging.getLogger(__name__)
STARTUP_FAILURE = 3  # uvicorn's exit status when the app did not start


class GatewayServer(uvicorn.Server):
    """uvicorn's server with the second signal's stop described in the module docstring."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
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


def run(app: Any, **options: Any) -> None:
    """Serve ``app`` as ``uvicorn.run`` would (``options`` are ``uvicorn.Config``'s), with
    :class:`GatewayServer`."""
    server = GatewayServer(Config(app, **options))
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
