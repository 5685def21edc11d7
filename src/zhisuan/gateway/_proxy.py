"""Forward a validated request to a replica and relay the answer, metering as it passes.

Answers go to the client through ASGI ``send`` directly (see ``_reply``). Streams are
relayed as they arrive, every complete SSE event of a read in one write. The gateway reads
each event only to time the first token and to take the token counts: workers asked with
``X-Zhisuan-Usage: always`` put a comment line ``: usage <prompt> <completion>`` in every
event (SSE comments are ignored by clients) and always send the final usage chunk, which
is dropped again when the client did not ask for ``stream_options.include_usage``.

How a request ends decides its usage record: a finished answer is recorded durably
*before* the client sees its end (``[DONE]`` or the JSON body); a client that goes away
(streaming or not) cancels the request's task, which closes the worker connection and so
cancels the generation there, and the record takes the worker's final count; a worker
that dies mid-stream becomes an error event on the client's stream and the record keeps
the tokens relayed until then.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from starlette.types import Message, Receive, Send

from zhisuan.cluster import Replica
from zhisuan.errors import EngineUnavailable
from zhisuan.gateway._context import Gateway
from zhisuan.gateway._exchange import Exchange
from zhisuan.gateway._reply import SSE_HEADERS, send_error, send_json
from zhisuan.gateway._routing import pick_replica
from zhisuan.gateway._wire import Response

logger = logging.getLogger(__name__)

USAGE_HEADER = "X-Zhisuan-Usage"
REQUEST_ID_HEADER = "X-Request-Id"
_DONE = b"data: [DONE]"
_USAGE_COMMENT = b": usage "
_background: set[asyncio.Task[None]] = set()


async def forward(
    gw: Gateway,
    path: str,
    body: bytes,
    ex: Exchange,
    receive: Receive,
    send: Send,
    *,
    include_usage: bool = False,
) -> None:
    """Send ``body`` to ``path`` on a replica of ``ex.model`` and relay the answer.

    Args:
        gw: the gateway state.
        path: worker path, e.g. ``/v1/chat/completions``.
        body: the client's JSON body, already validated.
        ex: the exchange record; it is metered exactly once, however the request ends.
        receive, send: the client's ASGI channels (the body already read).
        include_usage: the client asked for the usage chunk on a stream.

    Raises:
        NotFound, EngineUnavailable: no replica could take the request (nothing was sent).
    """
    call = _Call(gw, ex, receive)
    try:
        upstream = await call.open(path, body)
        if upstream.status == 200 and ex.stream:
            await call.relay(upstream, send, include_usage)
        else:
            await call.answer(upstream, send)
    except asyncio.CancelledError:
        if not call.gone:
            raise
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        call.abort()
    finally:
        call.release()


class _Call:
    """One request's trip to a replica: the replica, its answer, and the client's presence.

    While the answer is not complete, a waiter on ``receive`` cancels the request's task if
    the client disconnects (uvicorn's ``send`` would drop the bytes silently).
    """

    __slots__ = ("_answered", "_task", "_waiter", "ex", "gone", "gw", "replica", "upstream")

    def __init__(self, gw: Gateway, ex: Exchange, receive: Receive) -> None:
        self.gw = gw
        self.ex = ex
        self.replica: Replica | None = None
        self.upstream: Response | None = None
        self.gone = False
        self._answered = False
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._waiter: asyncio.Future[Message] = asyncio.ensure_future(receive())
        self._waiter.add_done_callback(self._on_receive)

    def _on_receive(self, waiter: asyncio.Future[Message]) -> None:
        if not self._answered and not waiter.cancelled():
            self.gone = True
            self._task.cancel()

    def answered(self) -> None:
        """The answer is complete: a disconnect from now on is no abort."""
        self._answered = True
        if not self._waiter.done():
            self._waiter.cancel()

    def release(self) -> None:
        self.answered()
        if self.replica is not None:
            self.replica.outstanding -= 1
            self.replica = None
        if self.upstream is not None:
            self.upstream.close()  # a no-op once read to the end; else it cancels the generation

    async def open(self, path: str, body: bytes) -> Response:
        """Pick a replica and send; a replica that refuses the connection is skipped once."""
        gw, ex = self.gw, self.ex
        headers = {
            "content-type": "application/json",
            USAGE_HEADER: "always",
            REQUEST_ID_HEADER: ex.request_id,
        }
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
            self.replica = replica
            try:
                host, port = _address(replica.endpoint)
                self.upstream = await gw.wire.post(host, port, path, body, headers)
                return self.upstream
            except OSError as exc:  # refused, reset, timed out, closed before answering
                replica.outstanding -= 1
                self.replica = None
                gw.meter.abandon(ex)
                tried.add(replica.spec.key)
                logger.warning("request %s: replica %s failed: %s", ex.request_id, ex.replica, exc)

    async def answer(self, upstream: Response, send: Send) -> None:
        """Relay a whole (non-stream or error) answer once its record is committed."""
        gw, ex = self.gw, self.ex
        try:
            content = await upstream.read()
        except OSError as exc:
            ex.error = f"worker connection lost: {exc}"
            ex.close("worker_error", 503)
            gw.finish(ex)
            self.answered()
            await send_error(send, EngineUnavailable(f"The replica serving '{ex.model}' failed."))
            return
        status = upstream.status
        if status == 200:
            _take_usage(ex, content)
            ex.mark_first_token()
        else:
            ex.error = content[:500].decode(errors="replace")
        ex.close("ok" if status == 200 else "error", status)
        gw.finish(ex)
        self.answered()
        await send_json(send, status, content, [(b"x-request-id", ex.request_id.encode())])

    async def relay(self, upstream: Response, send: Send, include_usage: bool) -> None:
        """Relay an SSE stream event by event; its record is committed before ``[DONE]``."""
        gw, ex = self.gw, self.ex
        headers = [*SSE_HEADERS, (b"x-request-id", ex.request_id.encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        buffer = b""
        try:
            async for chunk in upstream.iter_any():
                if self._answered:
                    continue  # read on to the end, so the worker connection is reused
                buffer += chunk
                if b"\n\n" not in buffer:
                    continue
                *events, buffer = buffer.split(b"\n\n")
                out = [e for e in events if e.endswith(_DONE) or _inspect(ex, e, include_usage)]
                if out and out[-1].endswith(_DONE):
                    ex.close("error" if ex.error else "ok", ex.http_status)
                    gw.finish(ex)
                    await self._end(send, b"\n\n".join(out) + b"\n\n")
                elif out:
                    body = b"\n\n".join(out) + b"\n\n"
                    await send({"type": "http.response.body", "body": body, "more_body": True})
        except OSError as exc:
            if self._answered:
                return
            logger.warning("request %s: stream from %s broke: %s", ex.request_id, ex.replica, exc)
            err = EngineUnavailable(f"The replica serving '{ex.model}' failed mid-stream.")
            ex.error = err.message
            ex.close("worker_error", err.status_code)
            gw.finish(ex)
            await self._end(send, b"data: " + json.dumps(err.to_body()).encode() + b"\n\n")
            return
        if not self._answered:  # the worker ended the stream without [DONE]
            ex.close("error" if ex.error else "ok", ex.http_status)
            gw.finish(ex)
            await self._end(send, b"")

    async def _end(self, send: Send, body: bytes) -> None:
        self.answered()
        await send({"type": "http.response.body", "body": body, "more_body": False})

    def abort(self) -> None:
        """The client went away before its answer was complete."""
        ex = self.ex
        if ex.context.get("metered"):
            return  # its record was already taken
        ex.close("client_abort", 499)
        endpoint = None if self.replica is None else self.replica.endpoint
        if endpoint is None:
            self.gw.finish(ex)
            return
        task = asyncio.get_running_loop().create_task(_settle_abort(self.gw, endpoint, ex))
        _background.add(task)
        task.add_done_callback(_background.discard)


@functools.lru_cache(maxsize=256)
def _address(endpoint: str | None) -> tuple[str, int]:
    if endpoint is None:
        raise OSError("the replica has no endpoint yet")
    url = urlsplit(endpoint)
    return url.hostname or "127.0.0.1", url.port or 80


_DECODER = json.JSONDecoder()


def _take_usage(ex: Exchange, content: bytes) -> None:
    """Take the counts from the answer's ``usage`` object (parsing only it when it can)."""
    at = content.rfind(b'"usage":')
    try:
        usage: Any = _DECODER.raw_decode(content[at + 8 :].decode().lstrip())[0] if at >= 0 else {}
    except ValueError:
        try:
            usage = json.loads(content).get("usage")
        except (ValueError, AttributeError):
            return
    if not isinstance(usage, dict):
        return
    ex.prompt_tokens = int(usage.get("prompt_tokens") or 0)
    ex.completion_tokens = int(usage.get("completion_tokens") or 0)


async def _settle_abort(gw: Gateway, endpoint: str, ex: Exchange) -> None:
    """Ask the worker how many tokens the cancelled generation used, then meter it."""
    url = f"{endpoint}/zhisuan/requests/{ex.request_id}"
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
