"""Answers sent straight through ASGI ``send``, without Starlette response objects.

The OpenAI endpoints' hot path and the pure-ASGI guards answer this way. A Starlette
``Response`` normalises its headers on every construction and a ``StreamingResponse``
runs a task group per stream; on a small machine that CPU is taken from the engines.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from starlette.types import Send

from zhisuan.errors import ZhisuanError
from zhisuan.protocol.errors import error_headers

Header = tuple[bytes, bytes]

JSON_TYPE: Header = (b"content-type", b"application/json")
SSE_HEADERS: tuple[Header, ...] = (
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
)


async def send_json(send: Send, status: int, body: bytes, headers: Sequence[Header] = ()) -> None:
    """Send a complete JSON answer."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": json_headers(body, headers),
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, err: ZhisuanError) -> None:
    """Send ``err`` as an OpenAI error body with its status and headers."""
    await send_json(send, *error_parts(err))


def error_parts(err: ZhisuanError) -> tuple[int, bytes, list[Header]]:
    """The status, OpenAI error body and headers of ``err``."""
    headers = [(k.lower().encode(), v.encode()) for k, v in error_headers(err).items()]
    return err.status_code, json.dumps(err.to_body()).encode(), headers


def error_answer(err: ZhisuanError) -> tuple[int, list[Header], bytes]:
    """``err`` as a whole answer: status, headers and OpenAI error body."""
    status, body, headers = error_parts(err)
    return status, json_headers(body, headers), body


def json_headers(body: bytes, headers: Sequence[Header] = ()) -> list[Header]:
    """The headers of a complete JSON answer."""
    return [JSON_TYPE, (b"content-length", b"%d" % len(body)), *headers]
