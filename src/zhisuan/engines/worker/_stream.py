"""Server-sent event streams that always release their engine sequence.

A stream ends in one of three ways: the engine finishes (``finish_reason``, usage chunk,
``[DONE]``), the engine fails mid-stream (an OpenAI error event, then ``[DONE]``), or the
client disconnects (Starlette cancels the response). :class:`SSEResponse` runs its
``on_close`` callback in every case, shielded from cancellation, so the engine's iterator
is closed and its batch slot freed at once rather than whenever the garbage collector
finalises the generator.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from zhisuan.engines.base import Delta
from zhisuan.engines.worker import _format as fmt
from zhisuan.engines.worker._errors import engine_failure
from zhisuan.engines.worker._requests import RequestRecord

logger = logging.getLogger(__name__)


async def aclose(iterator: AsyncIterator[Any]) -> None:
    """Close an async iterator (if it can be closed), shielded from cancellation."""
    close = getattr(iterator, "aclose", None)
    if close is None:
        return
    with anyio.CancelScope(shield=True):
        try:
            await close()
        except Exception:  # a failing cleanup must not mask the response's own outcome
            logger.warning("closing an engine stream failed", exc_info=True)


class SSEResponse(StreamingResponse):
    """A ``text/event-stream`` response that calls ``on_close`` however it ends.

    Args:
        events: the SSE byte chunks.
        on_close: awaited once after the stream ends, fails or is cancelled.
    """

    media_type = "text/event-stream"

    def __init__(
        self, events: AsyncIterator[bytes], *, on_close: Callable[[], Awaitable[None]]
    ) -> None:
        super().__init__(events, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._events = events
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await aclose(self._events)
            with anyio.CancelScope(shield=True):
                await self._on_close()


async def completion_events(
    job: fmt.Job,
    first: Delta,
    rest: AsyncIterator[Delta],
    record: RequestRecord,
    echo: str = "",
) -> AsyncIterator[bytes]:
    """SSE events of a chat or text completion stream.

    Args:
        job: the response identity and usage flags.
        first: the first delta (already awaited, so early errors got a status code).
        rest: the remaining deltas.
        record: updated with the counts as deltas pass (metering of aborted streams).
        echo: text to send before the completion (``echo`` of text completions), in a
            chunk of its own with the prompt's log-probabilities when they were asked
            (the first delta's ``prompt_logprobs``).

    Yields:
        Encoded SSE events, ending with ``data: [DONE]``. Events ready at the same moment
        go out in one chunk (one write, one wake-up of the reader): the role with the first
        token, the last token with the finish, the usage and ``[DONE]``.
    """

    def event(obj: dict[str, Any]) -> bytes:
        counts = (record.prompt_tokens, record.completion_tokens)
        return fmt.sse(obj, counts if job.usage_comments else None)

    record.prompt_tokens = first.prompt_tokens
    ready: list[bytes] = []
    if job.kind == "chat":
        ready.append(event(fmt.chunk(job, role=True)))
    elif echo or first.prompt_logprobs is not None:  # an empty prompt's BOS, scored
        ready.append(event(fmt.chunk(job, text=echo, prompt=first.prompt_logprobs)))
    last = first
    try:
        delta: Delta | None = first
        while delta is not None:
            last = delta
            record.update(delta)
            if delta.text or delta.logprobs:  # tokens with no text of their own come too
                ready.append(event(fmt.chunk(job, text=delta.text, entries=delta.logprobs)))
            if delta.finish_reason is not None:
                break
            if ready:  # out before waiting for the engine's next token
                yield b"".join(ready)
                ready.clear()
            delta = await anext(rest, None)
        record.end("finished")
        ready.append(event(fmt.chunk(job, finish_reason=last.finish_reason or "stop")))
        if job.include_usage:
            use = fmt.usage(last.prompt_tokens, last.completion_tokens)
            ready.append(event(fmt.usage_chunk(job, use)))
    except Exception as exc:
        record.end("failed")
        ready.append(event(engine_failure(exc, job.request_id).to_body()))
    ready.append(fmt.done(job))
    yield b"".join(ready)


async def relay(first: bytes, rest: AsyncIterator[bytes], request_id: str) -> AsyncIterator[bytes]:
    """SSE events from a pass-through engine, with a failure turned into an error event.

    Args:
        first: the first event (already awaited).
        rest: the remaining events; the engine ends them with ``[DONE]``.
        request_id: for the log line of a failure.

    Yields:
        The engine's events unchanged.
    """
    yield first
    try:
        async for event in rest:
            yield event
    except Exception as exc:
        yield fmt.sse(engine_failure(exc, request_id).to_body())
        yield fmt.DONE
