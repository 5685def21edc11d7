"""The OpenAI-compatible API: ``/v1/models``, chat, completions, embeddings.

``POST`` on chat, completions and embeddings is served by the gateway's hot path
(:class:`zhisuan.gateway._serving.HotPath`) before FastAPI routes anything; the routes here
declare those endpoints, their bodies and their answers for the OpenAPI schema.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel

from zhisuan.gateway._admission import principal_of
from zhisuan.gateway._routing import served_models
from zhisuan.gateway._serving import gateway_of
from zhisuan.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest

router = APIRouter(prefix="/v1", tags=["openai"])


@router.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    """The deployed models, as OpenAI's model list."""
    gw = gateway_of(request)
    principal = principal_of(request)
    names = [n for n in served_models(gw.backend) if principal.allows(n)]
    now = int(time.time())
    data = [{"id": n, "object": "model", "created": now, "owned_by": "zhisuan"} for n in names]
    return {"object": "list", "data": data}


@router.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest) -> Response:
    """Create a chat completion (streaming with ``stream: true``)."""
    return _declared_only(body)


@router.post("/completions", response_model=None)
async def completions(body: CompletionRequest) -> Response:
    """Create a text completion (streaming with ``stream: true``)."""
    return _declared_only(body)


@router.post("/embeddings", response_model=None)
async def embeddings(body: EmbeddingRequest) -> Response:
    """Create embeddings for a string or a list of strings."""
    return _declared_only(body)


def _declared_only(body: BaseModel) -> Response:
    raise RuntimeError(f"{type(body).__name__} is served by GatewayApp's hot path, not routed")
