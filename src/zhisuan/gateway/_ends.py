"""How a proxied request's end is metered, for the task path (``_proxy``) and the express
lane (``_express``) alike: a whole answer (:func:`answered`, its record durable before the
client has it) and a request cut short (:func:`settle_abort`, with the worker's final
count); and what a request to a worker carries (:func:`worker_headers`,
:func:`worker_request`, :func:`address`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping
from urllib.parse import urlsplit

import aiohttp

from zhisuan.engines._turns import TENANT_HEADER
from zhisuan.errors import EngineUnavailable
from zhisuan.gateway._context import Gateway
from zhisuan.gateway._exchange import Exchange
from zhisuan.gateway._sse import take_answer_counts, take_usage
from zhisuan.store import ANONYMOUS

logger = logging.getLogger(__name__)

USAGE_HEADER = "X-Zhisuan-Usage"
_USAGE_BYTES = USAGE_HEADER.lower().encode()  # the answer's counts: ``<prompt> <completion>``
REQUEST_ID_HEADER = "X-Request-Id"
_TIMING_BYTES = b"server-timing"  # the worker's time on the request, passed on
_background: set[asyncio.Task[None]] = set()
STOPPING = EngineUnavailable(
    "The gateway is stopping and ended this request before its answer was complete.",
    code="gateway_stopping",
    hint="retry it: another gateway, or this one once restarted, will serve it",
)
"""What a request still in flight when a stopping gateway's grace period is over gets."""


def worker_headers(ex: Exchange) -> dict[str, str]:
    """The headers of a request to a worker: its tenant too, whose line it waits in there,
    with the tenant's weight where that is not 1 (``zhisuan.engines._turns``; the
    principal's ``line``, which admission puts in the context)."""
    return {
        "content-type": "application/json",
        USAGE_HEADER: "always",
        REQUEST_ID_HEADER: ex.request_id,
        TENANT_HEADER: ex.context.get("line") or ANONYMOUS,
    }


def answered(
    gw: Gateway,
    ex: Exchange,
    status: int,
    headers: Mapping[bytes, bytes],
    content: bytes,
    *,
    account: bool = True,
) -> list[tuple[bytes, bytes]]:
    """Meter a whole answer (its record is durable on return); the headers to pass on.

    ``account=False`` leaves the rest of the metering (``gw.meter.account``) to the caller,
    for after the answer is written."""
    if status == 200:
        counts = headers.get(_USAGE_BYTES)
        if counts is None or not take_answer_counts(ex, counts):
            take_usage(ex, content)
        if ex.completion_tokens < 2:  # an embedding, or one token: no time per token
            ex.mark_first_token()  # else unknown unless the worker timed its first token
    else:
        ex.error = content[:500].decode(errors="replace")
    ex.close("ok" if status == 200 else "error", status)
    if account:
        gw.finish(ex)
    else:
        gw.meter.journal(ex)
    passed = [(b"x-request-id", ex.request_id.encode())]
    timing = headers.get(_TIMING_BYTES)
    if timing is not None:
        passed.append((_TIMING_BYTES, timing))
    return passed


def settle_abort(gw: Gateway, endpoint: str | None, ex: Exchange) -> None:
    """Meter a request its client left: with the worker's final count, once it has it."""
    if endpoint is None:
        gw.finish(ex)
        return
    task = asyncio.get_running_loop().create_task(_settle_abort(gw, endpoint, ex))
    _background.add(task)
    task.add_done_callback(_background.discard)


async def settled(timeout: float) -> None:
    """Wait, ``timeout`` seconds at most, until every request cut short has its record
    (a stopping gateway, before it stops the workers that count them)."""
    await asyncio.sleep(0)  # requests cancelled just now end first
    if _background:
        await asyncio.wait(set(_background), timeout=timeout)


@functools.lru_cache(maxsize=256)
def address(endpoint: str | None) -> tuple[str, int]:
    if endpoint is None:
        raise OSError("the replica has no endpoint yet")
    return _address(endpoint)


@functools.lru_cache(maxsize=256)
def _address(endpoint: str) -> tuple[str, int]:
    url = urlsplit(endpoint)
    return url.hostname or "127.0.0.1", url.port or 80


def worker_request(host: str, port: int, path: str, body: bytes, ex: Exchange) -> bytes:
    """The bytes of a request to a worker on the express lane and for a stream sent ahead:
    what :func:`worker_headers` names, on a head whose unchanging part is made once per
    worker and path."""
    tenant = ex.context.get("line") or ANONYMOUS
    return b"%s%s\r\n%s%s\r\ncontent-length: %d\r\n\r\n%s" % (
        _head(host, port, path),
        ex.request_id.encode(),
        _TENANT_FIELD,
        tenant.encode(),
        len(body),
        body,
    )


_TENANT_FIELD = f"{TENANT_HEADER}: ".encode()


@functools.lru_cache(maxsize=256)
def _head(host: str, port: int, path: str) -> bytes:
    """A worker request's head up to its request id's value."""
    return (
        f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
        f"{USAGE_HEADER}: always\r\n{REQUEST_ID_HEADER}: "
    ).encode("latin-1")


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
