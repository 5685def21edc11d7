"""Forward a validated request to a replica and relay the answer, metering as it passes.

Streams are relayed event by event. The gateway reads each SSE event only to time the
first token and to take the token counts: workers asked with ``X-Zhisuan-Usage: always``
put a comment line ``: usage <prompt> <completion>`` in every event (SSE comments are
ignored by clients) and always send the final usage chunk, which is dropped again when the
client did not ask for ``stream_options.include_usage``.

How a request ends decides its usage record: a finished answer is recorded durably
*before* the client sees its end (``[DONE]`` or the JSON body); a client that goes away
closes the worker connection, which cancels the generation there, and the record takes
the worker's final count; a worker that dies mid-stream becomes an error event on the
client's stream and the record keeps the tokens relayed until then.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
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
_DONE = b"data: [DONE]"
_USAGE_COMMENT = b": usage "
_background: set[asyncio.Task[None]] = set()


async def forward(
    gw: Gateway, path: str, body: bytes, ex: Exchange, *, include_usage: bool = False
) -> Response:
    """Send ``body`` to ``path`` on a replica of ``ex.model`` and relay the answer.

    Args:
        gw: the gateway state.
        path: worker path, e.g. ``/v1/chat/completions``.
        body: the client's JSON body, already validated.
        ex: the exchange record; it is metered exactly once, however the request ends.
        include_usage: the client asked for the usage chunk on a stream.

    Returns:
        The response for the client.

    Raises:
        NotFound, EngineUnavailable: no replica could take the request.
    """
    headers = {
        "content-type": "application/json",
        USAGE_HEADER: "always",
        REQUEST_ID_HEADER: ex.request_id,
    }
    replica, upstream = await _open(gw, path, body, headers, ex)
    if upstream.status == 200 and ex.stream:
        return StreamingResponse(
            _relay(gw, replica, upstream, ex, include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", REQUEST_ID_HEADER: ex.request_id},
        )
    try:
        content = await upstream.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        ex.error = f"worker connection lost: {exc}"
        ex.close("worker_error", 503)
        gw.finish(ex)
        return error_response(EngineUnavailable(f"The replica serving '{ex.model}' failed."))
    finally:
        replica.outstanding -= 1
        upstream.release()
    status = upstream.status
    ok = status == 200
    if ok:
        _take_usage(ex, content)
        ex.mark_first_token()
    else:
        ex.error = content[:500].decode(errors="replace")
    ex.close("ok" if ok else "error", status)
    await gw.finish_durably(ex)
    return Response(content, status_code=status, media_type="application/json")


async def _open(
    gw: Gateway, path: str, body: bytes, headers: dict[str, str], ex: Exchange
) -> tuple[Replica, aiohttp.ClientResponse]:
    """Pick a replica and send; a replica that refuses the connection is skipped once."""
    tried: set[str] = set()
    while True:
        try:
            replica = pick_replica(gw.backend, ex.model, exclude=tried)
        except EngineUnavailable as none_ready:
            err = none_ready
            if tried:  # we already had a replica, and it failed
                err = EngineUnavailable(f"The replica serving '{ex.model}' failed.")
            ex.error = err.message
            ex.close("worker_error" if tried else "error", err.status_code)
            gw.finish(ex)
            raise err from None
        except Exception as exc:
            ex.error = str(exc)
            ex.close("error", getattr(exc, "status_code", 500))
            gw.finish(ex)
            raise
        ex.replica = replica.spec.key
        gw.meter.start(ex, replica)
        replica.outstanding += 1
        try:
            upstream = await gw.client.post(f"{replica.endpoint}{path}", data=body, headers=headers)
            return replica, upstream
        except (aiohttp.ClientError, TimeoutError) as exc:
            replica.outstanding -= 1
            gw.meter.abandon(ex)
            tried.add(replica.spec.key)
            logger.warning("request %s: replica %s failed: %s", ex.request_id, ex.replica, exc)


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
    upstream: aiohttp.ClientResponse,
    ex: Exchange,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    buffer = b""
    ended = False
    try:
        async for chunk in upstream.content.iter_any():
            buffer += chunk
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                if event.endswith(_DONE):
                    ex.close("error" if ex.error else "ok", ex.http_status)
                    ended = True
                    await gw.finish_durably(ex)
                elif not _inspect(ex, event, include_usage):
                    continue
                yield event + b"\n\n"
        if not ended:  # the worker ended the stream without [DONE]
            ended = True
            ex.close("error" if ex.error else "ok", ex.http_status)
            gw.finish(ex)
    except (aiohttp.ClientError, TimeoutError) as exc:
        logger.warning("request %s: stream from %s broke: %s", ex.request_id, ex.replica, exc)
        err = EngineUnavailable(f"The replica serving '{ex.model}' failed mid-stream.")
        ex.error = err.message
        ex.close("worker_error", err.status_code)
        ended = True
        gw.finish(ex)
        yield b"data: " + json.dumps(err.to_body()).encode() + b"\n\n"
    finally:
        replica.outstanding -= 1
        upstream.close()  # mid-stream: drop the connection, which cancels the generation
        if not ended:  # the client went away: take the worker's final count
            ex.close("client_abort", 499)
            task = asyncio.get_running_loop().create_task(_settle_abort(gw, replica, ex))
            _background.add(task)
            task.add_done_callback(_background.discard)


async def _settle_abort(gw: Gateway, replica: Replica, ex: Exchange) -> None:
    """Ask the worker how many tokens the cancelled generation used, then meter it."""
    url = f"{replica.endpoint}/zhisuan/requests/{ex.request_id}"
    try:
        async with gw.client.get(url, params={"wait": "5"}) as resp:
            if resp.status == 200:
                data = await resp.json()
                ex.prompt_tokens = int(data.get("prompt_tokens") or ex.prompt_tokens)
                ex.completion_tokens = int(data.get("completion_tokens") or ex.completion_tokens)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        logger.info("request %s: no final count from the worker (%s)", ex.request_id, exc)
    finally:
        gw.finish(ex)


def _inspect(ex: Exchange, event: bytes, include_usage: bool) -> bool:
    """Time and meter one SSE event; returns whether to pass it to the client."""
    data = event
    if event.startswith(_USAGE_COMMENT):
        line, _, data = event.partition(b"\n")
        _take_counts(ex, line)
    if not data.startswith(b"data: "):
        return True
    try:
        obj: Any = json.loads(data[6:])
    except ValueError:
        return True
    if not isinstance(obj, dict):
        return True
    if "error" in obj:
        ex.error = str(obj["error"])[:500]
        ex.http_status = 503
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


def _take_counts(ex: Exchange, line: bytes) -> None:
    parts = line[len(_USAGE_COMMENT) :].split()
    if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
        ex.prompt_tokens, ex.completion_tokens = int(parts[0]), int(parts[1])
