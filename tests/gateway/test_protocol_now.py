"""The protocol's way to the express lane, on a real uvicorn server: a request goes to
``now`` once its whole body is in, answered from the callback or put on a task."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from _uvicorn_server import lifespan, serve

from zhisuan.gateway._protocol import EXPRESS_BODY, protocol_for

HOT = "/v1/chat/completions"
SEEN: list[str] = []


async def hot_app(scope: Any, receive: Any, send: Any) -> None:
    """The task path of a request ``now`` does not take (a large body)."""
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    SEEN.append(f"task {size}")
    await _answer(send, b"task:%d" % size)


async def _answer(send: Any, out: bytes) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": _headers(out)})
    await send({"type": "http.response.body", "body": out})


def _headers(out: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-length", b"%d" % len(out))]


def now(cycle: Any, start: Any) -> None:
    body = cycle.take_body()
    SEEN.append(f"now {body.decode()}")
    if body.startswith(b"later"):  # answered from a timer, unless the client leaves first
        loop = asyncio.get_running_loop()
        timer = loop.call_later(0.5, lambda: cycle.answer(200, _headers(body), body))

        def lost() -> None:
            SEEN.append("lost")
            timer.cancel()

        cycle.on_lost = lost
    elif body == b"task":

        async def app(scope: Any, receive: Any, send: Any) -> None:
            try:  # the body was taken: receive waits for a disconnect
                message = await asyncio.wait_for(receive(), 0.2)
                SEEN.append(f"received {message['type']}")
            except TimeoutError:
                pass
            await _answer(send, b"task:" + body)

        start(app)
    else:
        cycle.answer(200, _headers(b"now:" + body), b"now:" + body)


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    # keep-alive shorter than the "later" answers
    yield from serve(app, protocol_for(hot_app, now), timeout_keep_alive=0.2)


@pytest.fixture(autouse=True)
def _clear() -> None:
    SEEN.clear()


def _post(body: bytes) -> bytes:
    return b"POST %b HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n%b" % (
        HOT.encode(),
        len(body),
        body,
    )


def _read(sock: socket.socket, answers: int) -> bytes:
    """What the server sends until ``answers`` whole answers are in, or it closes."""
    data = b""
    while not _complete(data, answers):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _complete(data: bytes, answers: int) -> bool:
    rest, done = data, 0
    while b"\r\n\r\n" in rest:
        head, rest = rest.split(b"\r\n\r\n", 1)
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        if len(rest) < length:
            return False
        rest, done = rest[length:], done + 1
    return done >= answers


def test_a_body_in_two_writes_reaches_now_whole(port: int) -> None:
    raw = _post(b"split body")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(raw[:-4])
        time.sleep(0.05)
        sock.sendall(raw[-4:])
        data = _read(sock, 1)
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"now:split body")
    assert SEEN == ["now split body"]


def test_a_request_put_on_a_task_does_not_get_its_body_again(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(_post(b"task"))
        data = _read(sock, 1)
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"task:task")
    assert SEEN == ["now task"]  # receive() waited: nothing was received


def test_a_client_that_leaves_before_its_answer_is_seen(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(_post(b"later-1"))
        time.sleep(0.1)
    deadline = time.monotonic() + 2
    while "lost" not in SEEN and time.monotonic() < deadline:
        time.sleep(0.01)
    assert SEEN == ["now later-1", "lost"]


def test_an_answer_written_in_a_callback_does_not_close_the_next_request(port: int) -> None:
    # the first answer is written while the parser still reads the second request; the
    # keep-alive timer that answer arms (0.2 s) must not close the connection before
    # the second answer (0.5 s)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(_post(b"first") + _post(b"later-2"))
        data = _read(sock, 2)
    assert data.count(b"HTTP/1.1 200") == 2
    assert data.endswith(b"later-2") and b"now:first" in data


def test_a_large_body_takes_the_task_path(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(_post(b"x" * (EXPRESS_BODY + 1)))
        data = _read(sock, 1)
    assert data.endswith(b"task:%d" % (EXPRESS_BODY + 1))
    assert [f"task {EXPRESS_BODY + 1}"] == SEEN
