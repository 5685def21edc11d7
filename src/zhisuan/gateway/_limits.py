"""A pure-ASGI guard that refuses request bodies over the configured size (413)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zhisuan.errors import PayloadTooLarge
from zhisuan.gateway._reply import send_error


class BodyLimit:
    """Refuse bodies over ``limit`` bytes (413), by header or as they stream in.

    The body is read here, before the app sees it: an error raised from inside the app's
    own reading would be answered as the app's (FastAPI turns it into a 400 "error parsing
    the body"), so a chunked body over the limit would not get its 413.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            body = await read_body(scope, receive, self.limit)
        except PayloadTooLarge as err:
            await send_error(send, err)
            return
        except ClientGone:
            return
        await self.app(scope, _replay(body, receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` for an app whose body was read already: the body, then the client's."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if given:
            return await receive()  # what comes after a body: a disconnect
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes.")


class ClientGone(Exception):
    """The client disconnected before its request body was complete."""


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body, refused over ``limit`` bytes by header or as it streams in.

    Raises:
        PayloadTooLarge: the body is over the limit.
        ClientGone: the client went away first.
    """
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body"):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
