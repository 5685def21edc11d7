"""A minimal relay: the control of the gateway overhead benchmark (``--control``).

It passes each ``POST`` on to one worker over pooled keep-alive connections and the
whole answer back, with the worker's ``server-timing`` header, and does nothing else: no
auth, validation, quotas, metering or streaming (a stream is answered whole, at its end).
Like the gateway, it names the tenant (the benchmark's, ``bench``) to the worker, so its
requests wait in the same line of the worker's queue as the other paths'.
It runs in its own process on the gateway's cores, in protocol callbacks on uvloop, at
about 0.08 ms of CPU per request. What the benchmark's method finds between it and the
worker directly is what the method attributes to a hop that costs almost nothing; what
it finds between it and the gateway is the gateway's own work beyond such a hop.

Run: ``python _relay.py WORKER_HOST WORKER_PORT LISTEN_PORT``
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import cast

import httptools
import uvloop

Reply = Callable[[int, bytes, bytes], None]
_connecting: set[asyncio.Future[None]] = set()


class _Upstream(asyncio.Protocol):
    """One keep-alive connection to the worker."""

    def __init__(self, idle: list[_Upstream]) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.idle = idle
        self.reply: Reply | None = None
        self.body: list[bytes] = []
        self.timing = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.idle:
            self.idle.remove(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"server-timing":
            self.timing = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body, self.body = b"".join(self.body), []
        reply, self.reply = self.reply, None
        self.idle.append(self)
        if reply is not None:
            reply(self.parser.get_status_code(), body, self.timing)

    def send(self, request: bytes, reply: Reply) -> None:
        assert self.transport is not None
        self.reply, self.timing = reply, b""
        self.transport.write(request)


class _Client(asyncio.Protocol):
    """One client connection: each request goes to an idle upstream connection."""

    def __init__(self, worker: tuple[str, int], idle: list[_Upstream]) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.worker = worker
        self.idle = idle
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body, self.body = b"".join(self.body), []
        request = (
            b"POST %b HTTP/1.1\r\nhost: worker\r\ncontent-type: application/json\r\n"
            b"x-zhisuan-tenant: bench\r\ncontent-length: %d\r\n\r\n%b" % (self.url, len(body), body)
        )
        if self.idle:
            self.idle.pop().send(request, self.answer)
        else:
            task = asyncio.ensure_future(self._connect(request))
            _connecting.add(task)
            task.add_done_callback(_connecting.discard)

    async def _connect(self, request: bytes) -> None:
        loop = asyncio.get_running_loop()
        _, upstream = await loop.create_connection(lambda: _Upstream(self.idle), *self.worker)
        upstream.send(request, self.answer)

    def answer(self, status: int, body: bytes, timing: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        head = b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\n" % status
        if timing:
            head += b"server-timing: %b\r\n" % timing
        self.transport.write(head + b"content-length: %d\r\n\r\n%b" % (len(body), body))


async def serve(worker: tuple[str, int], port: int) -> None:
    idle: list[_Upstream] = []
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Client(worker, idle), "127.0.0.1", port)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve((sys.argv[1], int(sys.argv[2])), int(sys.argv[3])))
