"""The OpenAI endpoints' hot path: authenticate, validate, admit, forward, meter.

:class:`HotPath` serves ``POST`` on the three OpenAI endpoints straight from the ASGI
scope. :class:`zhisuan.gateway.app.GatewayApp` hands it those requests before FastAPI's
middleware, routing and dependency machinery: every proxied request pays the gateway's
CPU, and on a small machine that CPU is taken from the engines. It applies the guards the
rest of the app applies (the key check, the body limit), validates against the shared
:mod:`zhisuan.protocol` models (a bad field is a 400 naming its ``param``), forwards the
raw bytes unchanged and answers through ASGI ``send``. The routes in
``routers/openai.py`` declare the same endpoints for the OpenAPI schema.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import secrets

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.types import Receive, Scope, Send

from zhisuan.errors import InvalidParameter, ZhisuanError
from zhisuan.gateway._auth import OFF, Authenticator, Principal
from zhisuan.gateway._context import Gateway
from zhisuan.gateway._errors import invalid_from_validation
from zhisuan.gateway._exchange import Exchange
from zhisuan.gateway._limits import ClientGone, read_body
from zhisuan.gateway._proxy import forward
from zhisuan.gateway._reply import send_error
from zhisuan.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest

logger = logging.getLogger(__name__)

ROUTES: dict[str, tuple[str, type[BaseModel]]] = {
    "/v1/chat/completions": ("chat.completions", ChatCompletionRequest),
    "/v1/completions": ("completions", CompletionRequest),
    "/v1/embeddings": ("embeddings", EmbeddingRequest),
}
"""Path → (endpoint, request model) of the requests :class:`HotPath` serves."""
PATHS: dict[str, str] = {endpoint: path for path, (endpoint, _) in ROUTES.items()}
_INTERNAL = ZhisuanError("internal server error")
_PROCESS_ID = secrets.token_hex(8)
_REQUEST_IDS = (f"req-{_PROCESS_ID}{n:08x}" for n in itertools.count(1))
"""Request ids: random per process, then a counter (the id is the usage record's key)."""


def gateway_of(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


class HotPath:
    """Serve one ``POST`` to a path of :data:`ROUTES`.

    Args:
        auth: resolves keys (None: auth is off, every caller is anonymous).
        body_limit: the largest request body accepted, in bytes.
    """

    def __init__(self, auth: Authenticator | None, body_limit: int) -> None:
        self._auth = auth
        self._limit = body_limit

    async def __call__(self, gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint, model = ROUTES[scope["path"]]
        try:
            principal = OFF if self._auth is None else self._auth.check(scope)
            body = await read_body(scope, receive, self._limit)
            try:
                parsed = model.model_validate_json(body)
            except ValidationError as exc:
                raise _invalid(exc) from None
            await handle(gw, principal, endpoint, parsed, body, receive, send)
        except ZhisuanError as err:  # raised only before the answer starts
            await send_error(send, err)
        except ClientGone:
            pass
        except Exception:
            logger.exception("unhandled error on POST %s", scope["path"])
            with contextlib.suppress(RuntimeError):  # the answer had started: uvicorn closes it
                await send_error(send, _INTERNAL)


async def handle(
    gw: Gateway,
    principal: Principal,
    endpoint: str,
    parsed: BaseModel,
    body: bytes,
    receive: Receive,
    send: Send,
) -> None:
    """Serve one OpenAI endpoint: admit, forward to a replica, meter.

    Args:
        gw: the gateway state.
        principal: who is calling.
        endpoint: a key of :data:`PATHS`.
        parsed: the validated body.
        body: the raw body, forwarded unchanged.
        receive, send: the client's ASGI channels.

    Raises:
        ZhisuanError: the request was refused before anything was sent.
    """
    ex = Exchange(
        request_id=next(_REQUEST_IDS),
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
    await forward(gw, PATHS[endpoint], body, ex, receive, send, include_usage=include_usage)


def _invalid(exc: ValidationError) -> InvalidParameter:
    errors = exc.errors()
    if errors and errors[0].get("type") == "json_invalid":
        return InvalidParameter(f"We could not parse the JSON body of your request: {exc}.")
    return invalid_from_validation(exc)
