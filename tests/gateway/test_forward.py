"""A request the gateway cuts short itself is metered once, as a client that leaves would be
(a real worker socket; the gateway's backend and meter are stand-ins)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from _worker_stub import Worker

from zhisuan.cluster import Replica, ReplicaSpec, ReplicaState
from zhisuan.gateway._exchange import Exchange
from zhisuan.gateway._proxy import forward
from zhisuan.gateway._wire import Pool

MODEL = "m"
PATH = "/v1/chat/completions"


def _gateway(port: int, client: aiohttp.ClientSession) -> Any:
    spec = ReplicaSpec(model=MODEL, engine="transformers", device="cpu", model_path=None)
    replica = Replica(spec, state=ReplicaState.READY, endpoint=f"http://127.0.0.1:{port}")
    finished: list[Exchange] = []
    meter = SimpleNamespace(
        start=lambda ex, r: None,
        prepare=lambda ex: None,
        abandon=lambda ex: None,
        stop_share=lambda ex: None,
    )
    return SimpleNamespace(
        backend=SimpleNamespace(replicas=lambda model=None: [replica]),
        wire=Pool(),
        meter=meter,
        client=client,
        finish=finished.append,
        finished=finished,
        replica=replica,
    )


@contextlib.asynccontextmanager
async def _running(mode: str) -> AsyncIterator[Any]:
    """A worker socket in ``mode`` and a gateway state whose pool reaches it."""
    worker = Worker()
    await worker.start()
    worker.mode = mode
    async with aiohttp.ClientSession() as client:
        gw = _gateway(worker.port, client)
        gw.worker = worker
        try:
            yield gw
        finally:
            gw.wire.close()
            await worker.stop()


async def _never() -> dict[str, Any]:
    await asyncio.Event().wait()  # the client stays
    raise AssertionError


async def _finished(gw: Any) -> list[Exchange]:
    for _ in range(200):
        if gw.finished:
            return list(gw.finished)
        await asyncio.sleep(0.01)
    raise AssertionError("never metered")


def _request(stream: bool) -> Exchange:
    return Exchange(request_id="req-1", endpoint="chat.completions", model=MODEL, stream=stream)


def test_a_fault_while_relaying_is_metered_as_an_error() -> None:
    async def boom(message: Any) -> None:
        raise RuntimeError("boom")

    async def main() -> None:
        async with _running("answer") as gw:
            ex = _request(stream=True)
            with pytest.raises(RuntimeError, match="boom"):
                await forward(gw, PATH, b"{}", ex, _never, boom)
            assert await _finished(gw) == [ex]
            assert (ex.status, ex.http_status) == ("error", 500)
            assert ex.error is not None and "boom" in ex.error
            assert gw.replica.outstanding == 0

    asyncio.run(main())


@pytest.mark.parametrize(
    ("stream", "mode"), [(False, "hang"), (True, "hang"), (True, "stall")], ids=str
)
def test_a_request_the_stopping_gateway_cancels_is_metered_with_the_workers_count(
    stream: bool, mode: str
) -> None:
    """Metered with the worker's final count, and the client told why: a 503 answer, or,
    on a stream whose head is out, an error event that ends it."""

    async def main() -> None:
        sent: list[Any] = []
        async with _running(mode) as gw:
            ex = _request(stream)
            task = asyncio.create_task(forward(gw, PATH, b"{}", ex, _never, _append(sent)))
            await asyncio.sleep(0.1)
            task.cancel()
            await task  # ended, its ending handled: no traceback in the server's log
            await asyncio.wait_for(gw.worker.gone.wait(), 2)  # the generation is cancelled
            assert await _finished(gw) == [ex]
            assert (ex.status, ex.http_status, ex.completion_tokens) == ("error", 503, 2)
            assert gw.replica.outstanding == 0
            last = sent[-1]
            assert last["type"] == "http.response.body" and not last.get("more_body")
            if mode == "stall":  # the stream's head and first event were out
                assert sent[0]["status"] == 200
                assert last["body"].startswith(b"data: ") and b"gateway_stopping" in last["body"]
            else:
                assert sent[0]["status"] == 503 and b"gateway_stopping" in last["body"]

    asyncio.run(main())


def test_a_worker_that_dies_mid_answer_is_a_503_metered_once() -> None:
    async def main() -> None:
        sent: list[Any] = []
        async with _running("break") as gw:
            ex = _request(stream=False)
            await forward(gw, PATH, b"{}", ex, _never, _append(sent))
            assert gw.finished == [ex]
            assert (ex.status, ex.http_status) == ("worker_error", 503)
            assert sent[0]["status"] == 503 and gw.replica.outstanding == 0

    asyncio.run(main())


def _append(sent: list[Any]) -> Any:
    async def send(message: Any) -> None:
        sent.append(message)

    return send
