"""A lean load generator: one keep-alive HTTP/1.1 connection per client, raw bytes out,
``httptools`` in.

On a small host the load generator shares a core with the gateway (see
``bench_gateway_overhead.py``), and its CPU per request is time the gateway waits for.
aiohttp took about 0.7 ms of CPU per request (building the request, header multidicts,
stream readers), more than the gateway itself, so at concurrency 64 the figures said
more about the client than the gateway. This one writes a request prepared once and
times the answer from the write to the parser's end of message, in the protocol's own
callback, so the client's task scheduling stays out of the latency. Both paths of a
benchmark use it alike. It also reads the worker's own time on each request, from the
answer's ``server-timing: worker;dur=<ms>`` header or, on a stream, the same in the
``[DONE]`` event's comment line (see ``zhisuan.engines.worker._format``).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

TIMEOUT_S = 120.0
_DUR = b"worker;dur="


class LoadError(Exception):
    """A request failed: the connection broke, or the answer was not 200."""


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[float] | None = None
        self.sent = 0.0
        self.body = 0
        self.timing = b""  # the server-timing header, or a stream's tail
        self.worker_s: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(LoadError(f"bad answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(LoadError(f"connection lost: {exc}"))

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"server-timing":
            self.timing = value

    def on_body(self, body: bytes) -> None:
        self.body += len(body)
        if _DUR in body:
            self.timing = body[body.rfind(_DUR) :]

    def on_message_complete(self) -> None:
        elapsed = time.perf_counter() - self.sent
        self.worker_s = _worker_s(self.timing)
        waiter, self.waiter = self.waiter, None
        if waiter is None or waiter.done():
            return
        status = self.parser.get_status_code()
        if status != 200:
            waiter.set_exception(LoadError(f"HTTP {status}"))
        elif self.body == 0:
            waiter.set_exception(LoadError("empty answer"))
        else:
            waiter.set_result(elapsed)

    def _fail(self, exc: LoadError) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


def _worker_s(timing: bytes) -> float | None:
    at = timing.find(_DUR)
    if at < 0:
        return None
    value = timing[at + len(_DUR) :].split(b"\n", 1)[0].split(b",", 1)[0].split(b";", 1)[0]
    try:
        return float(value) / 1e3
    except ValueError:
        return None


class Client:
    """One connection that sends the same prepared request again and again.

    Args:
        url: the endpoint, e.g. ``http://127.0.0.1:8000/v1/chat/completions``.
        body: the JSON body.
        key: a bearer key, if any.
        headers: more headers to send.
    """

    def __init__(
        self,
        url: str,
        body: dict[str, Any],
        key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        data = json.dumps(body).encode()
        auth = f"authorization: Bearer {key}\r\n" if key else ""
        auth += "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        self.request = (
            f"POST {parts.path} HTTP/1.1\r\nhost: {parts.netloc}\r\n{auth}"
            f"content-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n"
        ).encode() + data
        self.conn: _Conn | None = None
        self.worker_s: float | None = None
        """The worker's own seconds on the last request, if its answer said."""

    async def send(self) -> float:
        """Seconds from writing the request to the end of the answer.

        Raises:
            LoadError: the request failed (the next call reconnects).
        """
        loop = asyncio.get_running_loop()
        conn = self.conn
        if conn is None or conn.transport is None:
            _, conn = await loop.create_connection(_Conn, self.host, self.port)
            self.conn = conn
        assert conn.transport is not None
        waiter: asyncio.Future[float] = loop.create_future()
        conn.waiter = waiter
        timer = loop.call_later(TIMEOUT_S, conn._fail, LoadError("timed out"))
        conn.body = 0
        conn.timing = b""
        conn.worker_s = None
        conn.sent = time.perf_counter()
        conn.transport.write(self.request)
        try:
            elapsed = await waiter
            self.worker_s = conn.worker_s
            return elapsed
        except LoadError:
            self.close()
            raise
        finally:
            timer.cancel()

    def close(self) -> None:
        if self.conn is not None and self.conn.transport is not None:
            self.conn.transport.close()
        self.conn = None
