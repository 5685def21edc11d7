"""The gateway's HTTP protocol: uvicorn's, with the OpenAI endpoints handed over directly.

``zhisuan serve`` runs uvicorn with :func:`protocol_for`. Every request goes through
uvicorn's ``httptools`` protocol as usual, except a ``POST`` to one of the hot path's
paths (:data:`zhisuan.gateway._serving.ROUTES`): its task calls
:class:`zhisuan.gateway._serving.HotPath` straight away, past uvicorn's proxy-headers
middleware and the app's dispatch, and its answers are written by :class:`_HotCycle`.
The gateway wrote those answers' headers itself, so they are not checked again against
uvicorn's header patterns, and a whole answer's head and body go out in one ``write``
(uvicorn writes them in two), as do a stream's head and first events. Everything else
(keep-alive, pipelining, flow control, disconnects, shutdown) is uvicorn's. With
:func:`protocol_for`'s ``now``, a hot request whose ``content-length`` is at most
:data:`EXPRESS_BODY` starts no task at its headers: once its body is in, the parser's
callback hands it to ``now`` (``HotPath.now``), which answers it there (``_express``) or
starts its task. The subclass leans on uvicorn's internals
(``tests/gateway/test_protocol.py`` checks it against the installed version), hence the
project's floor on uvicorn.

At concurrency 1 the gateway's core sleeps between requests and every request runs on
cold caches, so the code a request passes through costs more than its instructions
suggest; ``benchmarks/bench_gateway_overhead.py`` measures the difference.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, ClassVar

import httptools
from starlette.types import ASGIApp
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from zhisuan.gateway._serving import ROUTES, Cycle, Start

_HOT_PATHS = frozenset(path.encode() for path in ROUTES)
EXPRESS_BODY = HIGH_WATER_LIMIT
"""Bodies up to uvicorn's read buffer are read whole before a request starts (a larger one
would pause reading with no task to resume it)."""
Now = Callable[[Cycle, Start], None]


class GatewayProtocol(HttpToolsProtocol):
    """uvicorn's ``httptools`` protocol with a short way in for the hot path's requests."""

    hot_app: ClassVar[tuple[ASGIApp, ...]] = ()
    """The app that serves the hot path's requests, if any (set by :func:`protocol_for`)."""
    now: ClassVar[tuple[Now, ...]] = ()
    """Serves a hot path's request with its whole body in, if set (see ``_express``)."""
    _deferred: _HotCycle | None = None  # waits for its body, then goes to ``now``
    _waiting: _HotCycle | None = None  # on the express lane, its answer not written yet

    def on_message_begin(self) -> None:
        self._unset_keepalive_if_required()  # an answer written in a parser callback armed it
        super().on_message_begin()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        cycle, self._deferred = self._deferred, None
        if cycle is None or cycle.response_complete or cycle is not self.cycle:
            return
        self._waiting = cycle
        self.now[0](cycle, lambda app: self._start_asgi_task(cycle, app))  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        waiting, self._waiting = self._waiting, None
        super().connection_lost(exc)
        if waiting is not None and waiting.on_lost is not None and not waiting.response_complete:
            waiting.on_lost()

    def on_headers_complete(self) -> None:
        parser = self.parser
        if (
            not self.hot_app
            or parser.get_method() != b"POST"
            or self.expect_100_continue
            or self.root_path
            or self.limit_concurrency is not None
            or (self.cycle is not None and not self.cycle.response_complete)  # pipelined
            or parser.get_http_version() != "1.1"
            or parser.should_upgrade()
        ):
            super().on_headers_complete()
            return
        if self.url in _HOT_PATHS:  # the usual request line: no parsing needed
            path, query = self.url, b""
        else:
            url = httptools.parse_url(self.url)
            path, query = url.path, url.query or b""
            if path not in _HOT_PATHS:
                super().on_headers_complete()
                return
        scope: Any = self.scope
        scope["method"] = "POST"
        scope["path"] = path.decode("ascii")
        scope["raw_path"] = path
        scope["query_string"] = query
        self.cycle = _HotCycle(
            scope=scope,
            transport=self.transport,
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=self.access_log,
            default_headers=self.server_state.default_headers,
            message_event=asyncio.Event(),
            expect_100_continue=False,
            keep_alive=parser.should_keep_alive(),
            on_response=self.on_response_complete,
        )
        if self.now and _small(self.headers):
            self._deferred = self.cycle
            return
        self._start_asgi_task(self.cycle, self.hot_app[0])  # type: ignore[arg-type]


def _small(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"content-length":
            return value.isdigit() and int(value) <= EXPRESS_BODY
    return False


def protocol_for(hot_app: ASGIApp, now: Now | None = None) -> type[GatewayProtocol]:
    """The protocol class for a uvicorn server whose hot path's requests go to ``hot_app``,
    or, once their whole body is in, to ``now``."""
    attrs = {"hot_app": (hot_app,), "now": (now,) if now is not None else ()}
    return type("GatewayProtocol", (GatewayProtocol,), attrs)


class _HotCycle(RequestResponseCycle):
    """The answer to a hot path's request: headers the gateway wrote, and the head in one
    write with the first of the body (the whole body of a whole answer, a stream's first
    events, which a worker sends right after its own head)."""

    _head = b""

    async def send(self, message: Any) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        kind = message["type"]
        if kind == "http.response.start" and not self.response_started:
            self._start(message["status"], message.get("headers", ()))
        elif kind == "http.response.body" and self.response_started and not self.response_complete:
            self._body(message.get("body", b""), message.get("more_body", False))
        else:
            raise RuntimeError(f"Unexpected ASGI message '{kind}' at this point of the answer.")

    on_lost: Callable[[], None] | None = None
    """Called if the client goes away before the answer is complete (see ``_express``)."""

    def take_body(self) -> bytes:
        """The whole body, read: ``receive`` then waits for a disconnect, as after a
        task read the body itself."""
        body = bytes(self.body)
        self.body = bytearray()
        self.message_event.clear()
        return body

    def answer(self, status: int, headers: Any, body: bytes) -> None:
        """Write a whole answer at once, from a callback (the client may have gone)."""
        self.on_lost = None
        if self.disconnected or self.response_started:
            return
        self._start(status, headers)
        self._body(body, False)

    def _start(self, status: int, headers: Any) -> None:
        self.response_started = True
        if self.access_log:
            scope = self.scope
            self.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(scope),
                scope["method"],
                get_path_with_query_string(scope),
                scope["http_version"],
                status,
            )
        content = [STATUS_LINE[status]]
        for name, value in (*self.default_headers, *headers):
            if name == b"content-length":
                self.expected_content_length = int(value)
                self.chunked_encoding = False
            content += (name, b": ", value, b"\r\n")
        if not self.keep_alive:
            content.append(b"connection: close\r\n")
        if self.chunked_encoding is None:
            self.chunked_encoding = True
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        self._head = b"".join(content)  # written with the first of the body

    def _body(self, body: bytes, more_body: bool) -> None:
        if self.chunked_encoding:
            data = b"%x\r\n%b\r\n" % (len(body), body) if body else b""
            if not more_body:
                data += b"0\r\n\r\n"
        else:
            self.expected_content_length -= len(body)
            if self.expected_content_length < 0:
                raise RuntimeError("Response content longer than Content-Length")
            data = body
        if self._head and (data or not more_body):
            data, self._head = self._head + data, b""
        if data:
            self.transport.write(data)
        if more_body:
            return
        if self.expected_content_length != 0:
            raise RuntimeError("Response content shorter than Content-Length")
        self.response_complete = True
        self.message_event.set()
        if not self.keep_alive:
            self.transport.close()
        self.on_response()
