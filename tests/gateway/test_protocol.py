"""The gateway's HTTP protocol: the hot path's short way in, on a real uvicorn server."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from _uvicorn_server import lifespan, serve
from uvicorn.protocols.http.flow_control import FlowControl

from zhisuan.gateway._protocol import _HotCycle, protocol_for

HOT = "/v1/chat/completions"
SEEN: list[str] = []


async def _read(receive: Any) -> bytes:
    body: bytes = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def hot_app(scope: Any, receive: Any, send: Any) -> None:
    """What the gateway's hot path would be: answers a whole JSON body or an SSE stream."""
    query = scope["query_string"].decode()
    SEEN.append(f"hot {scope['method']} {scope['path']}" + (f"?{query}" if query else ""))
    body = await _read(receive)
    if body == b"stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for event in (b"data: 1\n\n", b"data: 2\n\n"):
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    if body == b"short":  # promises more bytes than it sends
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]}
        )
        await send({"type": "http.response.body", "body": b"abc"})
        return
    out = json.dumps({"echo": body.decode()}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(out))]
    await send({"type": "http.response.start", "status": 201, "headers": headers})
    await send({"type": "http.response.body", "body": out})


async def app(scope: Any, receive: Any, send: Any) -> None:
    """The rest of the app: everything the protocol does not hand to ``hot_app``."""
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    SEEN.append(f"app {scope['method']} {scope['path']}")
    body = await _read(receive)
    out = b"app:" + body
    headers = [(b"content-length", b"%d" % len(out))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": out})


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    yield from serve(app, protocol_for(hot_app))


@pytest.fixture(autouse=True)
def _clear() -> None:
    SEEN.clear()


def _exchange(port: int, raw: bytes, until: bytes) -> bytes:
    """Send ``raw`` on a fresh connection; what is read until ``until`` appears or the
    server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(raw)
        data = b""
        while until not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def _post(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return b"POST %b HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n%b\r\n%b" % (
        path.encode(),
        len(body),
        extra,
        body,
    )


def test_hot_requests_skip_the_app_and_the_rest_do_not(port: int) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        hot = client.post(HOT, content=b"hi")
        assert (hot.status_code, hot.json()) == (201, {"echo": "hi"})
        assert hot.headers["date"] and hot.headers["content-type"] == "application/json"
        other = client.post("/v1/models", content=b"x")
        get = client.get(HOT)
        hot_again = client.post(f"{HOT}?a=1", content=b"again")  # same connection
    assert (other.text, get.text, hot_again.json()) == ("app:x", "app:", {"echo": "again"})
    assert [
        f"hot POST {HOT}",
        "app POST /v1/models",
        f"app GET {HOT}",
        f"hot POST {HOT}?a=1",
    ] == SEEN


class _Transport:
    """Records what the cycle writes (the cycle's neighbour; the cycle itself is real)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def _cycle(transport: _Transport, keep_alive: bool = True) -> tuple[Any, list[str]]:
    events: list[str] = []
    cycle = _HotCycle(
        scope={"type": "http", "method": "POST", "path": HOT, "http_version": "1.1"},  # type: ignore[typeddict-item]
        transport=transport,  # type: ignore[arg-type]
        flow=FlowControl(transport),  # type: ignore[arg-type]
        logger=logging.getLogger("t"),
        access_logger=logging.getLogger("t.access"),
        access_log=False,
        default_headers=[(b"date", b"today")],
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=keep_alive,
        on_response=lambda: events.append("done"),
    )
    return cycle, events


def test_the_head_goes_with_the_first_of_the_body_and_a_stream_is_chunked_as_it_goes() -> None:
    async def main() -> None:
        whole = _Transport()
        cycle, events = _cycle(whole)
        headers = [(b"content-length", b"2"), (b"x-request-id", b"r1")]
        await cycle.send({"type": "http.response.start", "status": 200, "headers": headers})
        assert whole.writes == []  # the head waits for the body
        await cycle.send({"type": "http.response.body", "body": b"{}"})
        assert whole.writes == [
            b"HTTP/1.1 200 OK\r\ndate: today\r\ncontent-length: 2\r\nx-request-id: r1\r\n\r\n{}"
        ]
        assert (events, cycle.response_complete, whole.closed) == (["done"], True, False)
        with pytest.raises(RuntimeError, match="at this point"):
            await cycle.send({"type": "http.response.body", "body": b"more"})

        stream = _Transport()
        cycle, events = _cycle(stream, keep_alive=False)
        await cycle.send({"type": "http.response.start", "status": 200, "headers": []})
        assert stream.writes == []  # a stream's head waits for its first events
        await cycle.send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await cycle.send({"type": "http.response.body", "body": b"data: 2\n\n", "more_body": True})
        await cycle.send({"type": "http.response.body", "body": b"", "more_body": False})
        assert stream.writes == [
            b"HTTP/1.1 200 OK\r\ndate: today\r\nconnection: close\r\n"
            b"transfer-encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n",
            b"9\r\ndata: 2\n\n\r\n",
            b"0\r\n\r\n",
        ]
        assert (events, stream.closed) == (["done"], True)  # connection: close is kept

        long = _Transport()
        cycle, _ = _cycle(long)
        await cycle.send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1")]}
        )
        with pytest.raises(RuntimeError, match="longer than Content-Length"):
            await cycle.send({"type": "http.response.body", "body": b"too long"})
        assert long.writes == []

        empty = _Transport()  # a stream that ends with no event: its head goes with the end
        cycle, _ = _cycle(empty)
        await cycle.send({"type": "http.response.start", "status": 200, "headers": []})
        await cycle.send({"type": "http.response.body", "body": b"", "more_body": True})
        assert empty.writes == []
        await cycle.send({"type": "http.response.body", "body": b"", "more_body": False})
        assert empty.writes == [
            b"HTTP/1.1 200 OK\r\ndate: today\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"
        ]

    asyncio.run(main())


def test_keep_alive_carries_several_answers(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for text in (b"one", b"two"):
            sock.sendall(_post(HOT, text))
            data = b""
            while not data.endswith(b"}"):
                data += sock.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 201 Created\r\n")
            assert json.loads(body) == {"echo": text.decode()}


def test_a_stream_is_chunked(port: int) -> None:
    with (
        httpx.Client(base_url=f"http://127.0.0.1:{port}") as client,
        client.stream("POST", HOT, content=b"stream") as resp,
    ):
        assert resp.headers["transfer-encoding"] == "chunked"
        assert b"".join(resp.iter_raw()) == b"data: 1\n\ndata: 2\n\n"


def test_connection_close_is_honoured(port: int) -> None:
    data = _exchange(port, _post(HOT, b"bye", b"connection: close\r\n"), b"\x00never")
    head = data.partition(b"\r\n\r\n")[0].lower()
    assert b"connection: close" in head  # and the server closed: the read loop ended


def test_pipelined_and_expect_continue_requests_take_uvicorns_way(port: int) -> None:
    data = _exchange(port, _post(HOT, b"a") + _post(HOT, b"b"), b"app:b")
    assert data.index(b'{"echo": "a"}') < data.index(b"app:b")  # answered in order
    assert [f"hot POST {HOT}", f"app POST {HOT}"] == SEEN  # the second waited its turn
    SEEN.clear()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            _post(HOT, b"", b"expect: 100-continue\r\n").replace(b"length: 0", b"length: 2")
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(b"ok")
        assert sock.recv(65536).endswith(b"app:ok")
    assert [f"app POST {HOT}"] == SEEN


def test_an_answer_shorter_than_its_length_closes_the_connection(port: int) -> None:
    data = _exchange(port, _post(HOT, b"short"), b"\x00never")
    assert b"abc" in data  # the bytes sent, then the server closed the connection


def test_protocol_serves_many_connections_at_once(port: int) -> None:
    async def main() -> list[int]:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            answers = await asyncio.gather(
                *(client.post(HOT, content=b"%d" % i) for i in range(32))
            )
        return [int(a.json()["echo"]) for a in answers]

    assert asyncio.run(main()) == list(range(32))
