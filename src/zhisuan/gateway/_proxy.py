"""Forward a validated request to a replica and relay the answer, metering as it passes.

Streams are relayed event by event: the gateway reads each SSE event only to time the
first token and to take the usage chunk (workers always send one, because the gateway
asks with ``X-Zhisuan-Usage: always``; it is dropped again when the client did not ask
for ``stream_options.include_usage``). A worker that dies mid-stream becomes an error event
on the client's stream; a client that goes away closes the worker connection, which
cancels the generation there.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi.responses import Response, StreamingResponse

from zhisuan.cluster import Replica
from zhisuan.errors import EngineUnavailable
from zhisuan.gateway._context import Gateway
from zhisuan.gateway._errors import error_response
from zhisuan.gateway._exchange import Exchange
from zhisuan.gateway._routing import pick_replica

logger = logging.getLogger(__name__)

USAGE_HEADER = "X-Zhisuan-Usage"
REQUEST_ID_HEADER = "X-Request-Id"


async def forward(
    gw: Gateway, path: str, body: bytes, ex: Exchange, *, include_usage: bool = False
) -> Response:
    """Send ``body`` to ``path`` on a replica of ``ex.model`` and relay the answer.

    Args:
        gw: the gateway state.
        path: worker path, e.g. ``/v1/chat/completions``.
        body: the client's JSON body, already validated.
        ex: the exchange record; it is closed and handed to ``gw.finish`` exactly once.
        include_usage: the client asked for the usage chunk on a stream.

    Returns:
        The response for the client.

    Raises:
        NotFound, EngineUnavailable: no replica to send to (nothing was sent).
    """
    headers = {
        "content-type": "application/json",
        USAGE_HEADER: "always",
        REQUEST_ID_HEADER: ex.request_id,
    }
    replica, upstream = await _open(gw, path, body, headers, ex)
    if upstream.status_code != 200 or not ex.stream:
        try:
            content = await upstream.aread()
        except httpx.HTTPError as exc:
            replica.outstanding -= 1
            return _fail(gw, ex, f"worker connection lost: {exc}")
        finally:
            await upstream.aclose()
        replica.outstanding -= 1
        _take_usage(ex, content)
        ex.mark_first_token()
        ok = upstream.status_code == 200
        ex.close("ok" if ok else "error", upstream.status_code)
        if not ok:
            ex.error = content[:500].decode(errors="replace")
        gw.finish(ex)
        return Response(content, status_code=upstream.status_code, media_type="application/json")
    return StreamingResponse(
        _relay(gw, replica, upstream, ex, include_usage),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", REQUEST_ID_HEADER: ex.request_id},
    )


async def _open(
    gw: Gateway, path: str, body: bytes, headers: dict[str, str], ex: Exchange
) -> tuple[Replica, httpx.Response]:
    """Pick a replica and send; a replica that refuses the connection is skipped once."""
    tried: set[str] = set()
    while True:
        try:
            replica = pick_replica(gw.backend, ex.model, exclude=tried)
        except Exception as exc:
            ex.close("error", getattr(exc, "status_code", 500))
            ex.error = str(exc)
            gw.finish(ex)
            raise
        ex.replica = replica.spec.key
        request = gw.client.build_request(
            "POST", f"{replica.endpoint}{path}", content=body, headers=headers
        )
        replica.outstanding += 1
        try:
            return replica, await gw.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            replica.outstanding -= 1
            tried.add(replica.spec.key)
            logger.warning("request %s: replica %s failed: %s", ex.request_id, ex.replica, exc)
            if len(tried) >= 2:
                ex.close("worker_error", 503)
                ex.error = str(exc)
                gw.finish(ex)
                raise EngineUnavailable(
                    f"The replica serving '{ex.model}' failed: {exc.__class__.__name__}."
                ) from exc


def _fail(gw: Gateway, ex: Exchange, message: str) -> Response:
    err = EngineUnavailable(message)
    ex.close("worker_error", err.status_code)
    ex.error = message
    gw.finish(ex)
    return error_response(err)


def _take_usage(ex: Exchange, content: bytes) -> None:
    try:
        usage = json.loads(content).get("usage") or {}
    except (ValueError, AttributeError):
        return
    ex.prompt_tokens = int(usage.get("prompt_tokens") or 0)
    ex.completion_tokens = int(usage.get("completion_tokens") or 0)


async def _relay(
    gw: Gateway,
    replica: Replica,
    upstream: httpx.Response,
    ex: Exchange,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    buffer = b""
    status = "client_abort"
    try:
        async for chunk in upstream.aiter_raw():
            buffer += chunk
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                keep = _inspect(ex, event, include_usage)
                if keep:
                    yield event + b"\n\n"
        status = "error" if ex.error else "ok"
    except httpx.HTTPError as exc:
        logger.warning("request %s: stream from %s broke: %s", ex.request_id, ex.replica, exc)
        status = "worker_error"
        err = EngineUnavailable(f"The replica serving '{ex.model}' failed mid-stream.")
        ex.error = err.message
        yield b"data: " + json.dumps(err.to_body()).encode() + b"\n\n"
    finally:
        replica.outstanding -= 1
        await upstream.aclose()
        ex.close(status, 200 if status == "ok" else ex.http_status)
        gw.finish(ex)


def _inspect(ex: Exchange, event: bytes, include_usage: bool) -> bool:
    """Time and meter one SSE event; returns whether to pass it to the client."""
    if not event.startswith(b"data: ") or event == b"data: [DONE]":
        return True
    try:
        obj: Any = json.loads(event[6:])
    except ValueError:
        return True
    if not isinstance(obj, dict):
        return True
    if "error" in obj:
        ex.error = str(obj["error"])[:500]
        ex.http_status = int((obj["error"] or {}).get("status") or 503)
        return True
    usage = obj.get("usage")
    if usage:
        ex.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        ex.completion_tokens = int(usage.get("completion_tokens") or 0)
        if not obj.get("choices"):
            return include_usage
    if obj.get("choices"):
        ex.mark_first_token()
    return True
