"""A lean HTTP/1.1 client for the gateway's one hot call: a POST to a worker on loopback.

Every proxied request pays for this call, and on a small machine its CPU is taken from
the engines. A general client (aiohttp, httpx) builds request objects, header multidicts,
timers and trace hooks for each call; this one writes the request in one buffer on a
pooled keep-alive connection and parses the answer with ``httptools`` (the C parser
uvicorn uses), which halves the gateway's CPU for the call
(``benchmarks/bench_gateway_overhead.py``). It speaks only what the workers answer:
HTTP/1.1 with a ``content-length`` or chunked body. Everything else the gateway sends
to workers (health checks, final counts) goes through aiohttp.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import cast

import httptools

CONNECT_TIMEOUT_S = 5.0
IDLE_S = 50.0
"""Pooled connections idle longer than this are closed (workers keep them 75 s)."""
_HIGH_WATER = 1 << 20  # buffered body bytes before the worker connection stops being read


class WireError(ConnectionError):
    """The worker connection failed or closed before the answer was complete."""


class _Conn(asyncio.Protocol):
    """One keep-alive connection and the answer being read on it."""

    def __init__(
        self, addr: tuple[str, int], forget: Callable[[_Conn], None] | None = None
    ) -> None:
        self.addr = addr
        self.forget = forget
        """Called when the connection is lost while idle in its pool."""
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.idle_since = 0.0
        self.in_use = True
        self.headers: dict[bytes, bytes] = {}
        self.headers_done = False
        self.keep_alive = False
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.complete = False
        self.received = False
        self.lost = False
        self.whole = False  # wake the reader only when the answer is complete
        self.waiter: asyncio.Future[None] | None = None
        self.callback: Callable[[], None] | None = None
        """Called instead of waking a waiter (see :meth:`Pool.send`)."""

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.connection_lost(None)
            if self.transport is not None:
                self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.in_use and self.forget is not None:
            self.forget(self)  # idle in its pool: its worker stopped or restarted
        self._wake()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        self.headers_done = True
        self.keep_alive = self.parser.should_keep_alive()
        if not self.whole:
            self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        if self.whole:
            return
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    def _wake(self) -> None:
        if self.callback is not None:
            self.callback()
            return
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Until the parser or the connection has news."""
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    def take(self) -> bytes:
        data = b"".join(self.chunks) if len(self.chunks) != 1 else self.chunks[0]
        self.chunks.clear()
        if self.buffered > _HIGH_WATER and self.transport is not None:
            self.transport.resume_reading()
        self.buffered = 0
        return data

    def reset(self) -> None:
        self.headers = {}
        self.chunks.clear()
        self.buffered = 0
        self.complete = self.received = self.headers_done = self.whole = False
        self.callback = None


class Response:
    """A worker's answer: status and headers at once, the body as it arrives."""

    __slots__ = ("_conn", "_pool", "headers", "status")

    def __init__(self, pool: Pool, conn: _Conn) -> None:
        self._pool = pool
        self._conn = conn
        self.status: int = conn.parser.get_status_code()
        self.headers: Mapping[bytes, bytes] = conn.headers

    async def read(self) -> bytes:
        """The whole body.

        Raises:
            WireError: the connection broke first.
        """
        conn = self._conn
        while not conn.complete:
            if conn.lost:
                raise WireError("worker connection lost mid-answer")
            await conn.wait()
        return conn.take()

    async def chunk(self) -> bytes:
        """The body bytes that arrived since the last call, waiting for some; ``b""`` at
        the end.

        Raises:
            WireError: the connection broke before the end.
        """
        conn = self._conn
        while True:
            if conn.chunks:
                return conn.take()
            if conn.complete:
                return b""
            if conn.lost:
                raise WireError("worker connection lost mid-stream")
            await conn.wait()

    def close(self) -> None:
        """Give the connection back if the answer was read to the end, else drop it.

        Dropping it mid-answer is how a generation is cancelled: the worker sees the
        disconnect.
        """
        self._pool.release(self._conn)


class Pool:
    """Keep-alive connections per worker address."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[_Conn]] = {}

    async def post(
        self,
        host: str,
        port: int,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        whole: bool = False,
    ) -> Response:
        """Send a POST and wait for the answer's status and headers.

        With ``whole``, wait for the whole answer instead: the caller is woken once, not
        once for the headers and again for the body (a non-stream answer is read whole
        anyway).

        Raises:
            WireError, OSError, TimeoutError: the worker could not be reached, or closed
                the connection before answering.
        """
        request = post_request(host, port, path, body, headers)
        conn, reused = await self._acquire(host, port)
        try:
            return await self._exchange(conn, request, whole)
        except WireError:
            if not reused or conn.received:
                raise
        # a pooled connection the worker had just closed: once more on a fresh one
        conn, _ = await self._acquire(host, port, fresh=True)
        return await self._exchange(conn, request, whole)

    async def _exchange(self, conn: _Conn, request: bytes, whole: bool) -> Response:
        try:
            self.write(conn, request, whole)
        except BaseException:
            self._drop(conn)
            raise
        return await self.answer(conn)

    @staticmethod
    def write(conn: _Conn, request: bytes, whole: bool) -> None:
        """Write ``request`` on ``conn`` (from :meth:`idle`); :meth:`answer` waits for
        the answer (whole, or its status and headers)."""
        assert conn.transport is not None
        conn.whole = whole
        conn.transport.write(request)

    async def answer(self, conn: _Conn) -> Response:
        """Wait for the answer to the request written on ``conn``: whole, or its status
        and headers (see :meth:`post`).

        Raises:
            WireError: the connection closed before the answer began.
        """
        whole = conn.whole
        try:
            while not (conn.complete if whole else conn.headers_done):
                if conn.lost:
                    if conn.headers_done:
                        break  # lost mid-body: the answer had begun, its reader sees the loss
                    raise WireError("worker closed the connection before answering")
                await conn.wait()
        except BaseException:
            self._drop(conn)
            raise
        return Response(self, conn)

    def idle(self, host: str, port: int) -> _Conn | None:
        """A pooled connection to the worker, taken for a request, if one is idle."""
        idle = self._idle.get((host, port))
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.lost and now - conn.idle_since < IDLE_S:
                conn.in_use = True
                return conn
            self._drop(conn)
        return None

    @staticmethod
    def send(conn: _Conn, request: bytes, callback: Callable[[], None]) -> None:
        """Write ``request`` on ``conn`` (from :meth:`idle`) and call ``callback`` once the
        whole answer is in (``conn.complete``) or the connection is lost (``conn.lost``;
        ``conn.received`` tells whether the worker had begun to answer)."""
        assert conn.transport is not None
        conn.whole = True
        conn.callback = callback
        conn.transport.write(request)

    async def _acquire(self, host: str, port: int, fresh: bool = False) -> tuple[_Conn, bool]:
        pooled = None if fresh else self.idle(host, port)
        if pooled is not None:
            return pooled, True
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(
            loop.create_connection(lambda: _Conn((host, port), self._forget), host, port),
            CONNECT_TIMEOUT_S,
        )
        return conn, False

    def release(self, conn: _Conn) -> None:
        """Give a connection back once its answer was read to the end, else close it."""
        if not conn.in_use:
            return  # released or dropped already
        if not conn.complete or conn.lost or not conn.keep_alive:
            self._drop(conn)
            return
        conn.reset()
        conn.in_use = False
        conn.idle_since = time.monotonic()
        self._idle.setdefault(conn.addr, []).append(conn)

    def _forget(self, conn: _Conn) -> None:
        """Take a lost connection out of the pool, and its worker's address once it has
        none left (the address of a worker that stopped is not asked for again)."""
        idle = self._idle.get(conn.addr)
        if idle is not None and conn in idle:
            idle.remove(conn)
            if not idle:
                del self._idle[conn.addr]

    @staticmethod
    def _drop(conn: _Conn) -> None:
        conn.in_use = False
        conn.callback = None
        if conn.transport is not None:
            conn.transport.close()

    def close(self) -> None:
        """Close every pooled connection."""
        for conns in self._idle.values():
            for conn in conns:
                self._drop(conn)
        self._idle.clear()


def post_request(host: str, port: int, path: str, body: bytes, headers: Mapping[str, str]) -> bytes:
    """The bytes of a ``POST`` of ``body`` to a worker."""
    head = [f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-length: {len(body)}\r\n"]
    head += [f"{name}: {value}\r\n" for name, value in headers.items()]
    head.append("\r\n")
    return "".join(head).encode("latin-1") + body
