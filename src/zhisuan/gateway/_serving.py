"""The OpenAI endpoints' logic: admit, forward, meter.

Bodies arrive validated by FastAPI against the shared :mod:`zhisuan.protocol` models
(so the OpenAPI schema is exact and a bad field is a 400 naming its ``param``); the raw
bytes are forwarded unchanged to the worker.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel

from zhisuan.gateway._context import Gateway
from zhisuan.gateway._exchange import Exchange
from zhisuan.gateway._proxy import forward
from zhisuan.protocol import new_id

PATHS: dict[str, str] = {
    "chat.completions": "/v1/chat/completions",
    "completions": "/v1/completions",
    "embeddings": "/v1/embeddings",
}


def gateway_of(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


async def handle(request: Request, endpoint: str, parsed: BaseModel) -> Response:
    """Serve one OpenAI endpoint: admit, forward to a replica, meter.

    Args:
        request: the client's request (its body is already read and validated).
        endpoint: a key of :data:`PATHS`.
        parsed: the validated body.

    Returns:
        The worker's answer relayed (JSON or an SSE stream).
    """
    gw = gateway_of(request)
    body = await request.body()
    ex = Exchange(
        request_id=new_id("req"),
        endpoint=endpoint,
        model=str(getattr(parsed, "model", "")),
        stream=bool(getattr(parsed, "stream", False)),
    )
    ex.context["request"] = parsed
    if gw.admit is not None:
        await gw.admit(request, ex)
    else:
        gw.meter.begin(ex)
    include_usage = bool(getattr(parsed, "include_usage", False))
    return await forward(gw, PATHS[endpoint], body, ex, include_usage=include_usage)
