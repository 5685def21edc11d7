"""The OpenAI endpoints' logic: validate, admit, forward, meter.

Two ways in, one logic: the FastAPI routes (``routers/openai.py``, which also give the
OpenAPI schema) and :class:`FastPath`, a pure-ASGI shortcut that serves the same three
POST endpoints without FastAPI's routing and dependency machinery. Every proxied request
pays the gateway's CPU, and on a small machine that CPU is taken from the engines, so the
hot path stays as short as it can be. Both validate against the shared
:mod:`zhisuan.protocol` models (a bad field is a 400 naming its ``param``) and forward the
raw bytes unchanged.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zhisuan.errors import InvalidParameter, ZhisuanError
from zhisuan.gateway._auth import OFF, Principal
from zhisuan.gateway._context import Gateway
from zhisuan.gateway._errors import error_response, invalid_from_validation
from zhisuan.gateway._exchange import Exchange
from zhisuan.gateway._proxy import forward
from zhisuan.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, new_id

PATHS: dict[str, str] = {
    "chat.completions": "/v1/chat/completions",
    "completions": "/v1/completions",
    "embeddings": "/v1/embeddings",
}
MODELS: dict[str, tuple[str, type[BaseModel]]] = {
    "/v1/chat/completions": ("chat.completions", ChatCompletionRequest),
    "/v1/completions": ("completions", CompletionRequest),
    "/v1/embeddings": ("embeddings", EmbeddingRequest),
}


def gateway_of(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


async def handle(
    gw: Gateway, principal: Principal, endpoint: str, parsed: BaseModel, body: bytes
) -> Response:
    """Serve one OpenAI endpoint: admit, forward to a replica, meter.

    Args:
        gw: the gateway state.
        principal: who is calling.
        endpoint: a key of :data:`PATHS`.
        parsed: the validated body.
        body: the raw body, forwarded unchanged.

    Returns:
        The worker's answer relayed (JSON or an SSE stream).
    """
    ex = Exchange(
        request_id=new_id("req"),
        endpoint=endpoint,
        model=str(getattr(parsed, "model", "")),
        stream=bool(getattr(parsed, "stream", False)),
    )
    ex.context["request"] = parsed
    if gw.admit is not None:
        await gw.admit(principal, ex)
    else:
        gw.meter.begin(ex)
    include_usage = bool(getattr(parsed, "include_usage", False))
    return await forward(gw, PATHS[endpoint], body, ex, include_usage=include_usage)


async def handle_request(request: Request, endpoint: str, parsed: BaseModel) -> Response:
    """:func:`handle` for a FastAPI route (body already read and validated)."""
    principal: Principal = getattr(request.state, "principal", OFF)
    return await handle(gateway_of(request), principal, endpoint, parsed, await request.body())


class FastPath:
    """Pure-ASGI middleware serving ``POST`` on the three OpenAI endpoints directly.

    It sits inside the auth and body-limit guards (the principal is already in
    ``scope["state"]``) and hands everything else to the app.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = MODELS.get(scope["path"]) if scope["type"] == "http" else None
        if route is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        endpoint, model = route
        body = await _read(receive)
        gw: Gateway = scope["app"].state.gateway
        principal: Principal = scope.get("state", {}).get("principal", OFF)
        try:
            try:
                parsed = model.model_validate_json(body)
            except ValidationError as exc:
                raise _invalid(exc) from None
            response = await handle(gw, principal, endpoint, parsed, body)
        except ZhisuanError as err:
            response = error_response(err)
        await response(scope, _replay(receive), send)


async def _read(receive: Receive) -> bytes:
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False) and message["type"] == "http.request"
    return b"".join(chunks)


def _replay(receive: Receive) -> Receive:
    """After the body is read, only disconnects remain to be received."""

    async def wait_disconnect() -> Message:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return message

    return wait_disconnect


def _invalid(exc: ValidationError) -> InvalidParameter:
    errors = exc.errors()
    if errors and errors[0].get("type") == "json_invalid":
        return InvalidParameter(f"We could not parse the JSON body of your request: {exc}.")
    return invalid_from_validation(exc)
