"""A real uvicorn server on a thread, for the protocol's tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn


async def lifespan(receive: Any, send: Any) -> None:
    """Answer uvicorn's lifespan messages (the test apps keep no state)."""
    await receive()
    await send({"type": "lifespan.startup.complete"})
    await receive()
    await send({"type": "lifespan.shutdown.complete"})


def serve(app: Any, http: Any, **config: Any) -> Iterator[int]:
    """Run ``app`` with the protocol class ``http`` on a free port; yields the port."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, http=http, log_level="warning", **config)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    yield server.servers[0].sockets[0].getsockname()[1]
    server.should_exit = True
    thread.join(10)
