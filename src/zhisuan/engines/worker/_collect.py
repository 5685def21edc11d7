"""A whole (non-stream) answer: the engine's deltas collected, and the wait for it cut short
when the client disconnects; a stream's wait for its first event, cut short alike; and the
engine's generation, or none where a text completion asks for no token and no score."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from fastapi import Request

from zhisuan.engines.base import Delta, Engine, PromptLogprobs, TokenLogprobs
from zhisuan.engines.worker import _format as fmt
from zhisuan.engines.worker._requests import RequestRecord
from zhisuan.engines.worker._stream import aclose
from zhisuan.protocol import SamplingParams

_T = TypeVar("_T")

WATCH_AFTER_S = 0.05
"""How long a stream waits for its first event before its connection is watched: most start
at once, and a watch (a task per stream) cost them throughput at concurrency 64."""


class ClientGone(Exception):
    """The client disconnected before a non-stream answer was ready."""


def generation(
    engine: Engine, prompt: str, params: SamplingParams, request_id: str
) -> AsyncIterator[Delta]:
    """The deltas of ``prompt``'s completion: the engine's, except for a budget of no token
    and no prompt to score (``echo`` with ``max_tokens`` 0 and no ``logprobs``), which needs
    no engine: one finished delta (``"length"``, no completion token) on any engine."""
    if params.max_tokens == 0 and not params.prompt_logprobs:
        return _nothing(engine.count_tokens(prompt))
    return engine.generate(prompt, params, request_id)


async def _nothing(prompt_tokens: int) -> AsyncIterator[Delta]:
    yield Delta("", prompt_tokens, 0, "length")


async def collect(
    engine: Engine,
    job: fmt.Job,
    prompt: str,
    params: SamplingParams,
    echo: str,
    record: RequestRecord,
) -> dict[str, Any]:
    """The engine's whole answer to ``prompt`` as one OpenAI response body (``echo``
    first, the deltas joined, and their log-probabilities if asked, the prompt's first
    where it was scored; ``record`` follows them and ends with the generation)."""
    parts: list[str] = [echo]
    entries: list[TokenLogprobs] = []
    scored: PromptLogprobs | None = None  # the prompt's tokens, when asked
    last: Delta | None = None
    deltas: AsyncIterator[Delta] | None = None
    try:
        deltas = generation(engine, prompt, params, job.request_id)
        async for delta in deltas:
            parts.append(delta.text)
            if delta.logprobs:
                entries.extend(delta.logprobs)
            if delta.prompt_logprobs is not None:
                scored = delta.prompt_logprobs
            record.update(delta)
            last = delta
            if delta.finish_reason is not None:
                break
    except BaseException as exc:
        record.end("failed" if isinstance(exc, Exception) else "cancelled")
        raise
    finally:
        record.end("finished")
        if deltas is not None:
            await aclose(deltas)
    prompt_tokens = last.prompt_tokens if last else engine.count_tokens(prompt)
    completion_tokens = last.completion_tokens if last else 0
    finish = (last.finish_reason if last else None) or "stop"
    use = fmt.usage(prompt_tokens, completion_tokens)
    return fmt.response(job, "".join(parts), finish, use, entries, scored)


async def until_disconnect(request: Request, work: Awaitable[_T]) -> _T:
    """Await ``work``, cancelling it if the client disconnects first.

    Args:
        request: the request whose connection to watch (its body already read).
        work: the coroutine producing the answer.

    Returns:
        What ``work`` returns.

    Raises:
        ClientGone: the client disconnected; ``work`` was cancelled.
    """
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        watcher.cancel()
        raise
    watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    raise ClientGone


async def first_event(request: Request, events: AsyncIterator[_T]) -> _T:
    """The first item of a stream's ``events``; the client's leaving while it waits (in the
    engine's queue, say) cancels the wait, and with it the generation.

    The connection is watched only once the wait has lasted :data:`WATCH_AFTER_S`: until
    then the cost is a timer.

    Raises:
        ClientGone: the client disconnected first.
    """
    task = asyncio.current_task()
    assert task is not None
    left: list[bool] = []
    watcher: asyncio.Future[None] | None = None

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        left.append(True)
        task.cancel()

    def start_watching() -> None:
        nonlocal watcher
        watcher = asyncio.ensure_future(watch())

    timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, start_watching)
    try:
        return await anext(events)
    except asyncio.CancelledError:
        if left and task.uncancel() == 0:
            raise ClientGone from None
        raise
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()
