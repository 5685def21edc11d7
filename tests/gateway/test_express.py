"""The express lane against a real worker socket: answers, no idle connection, a stale
connection, and a client that leaves (the gateway's backend and meter are stand-ins)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import aiohttp
from _worker_stub import Worker

from zhisuan.cluster import Replica, ReplicaSpec, ReplicaState
from zhisuan.gateway._ends import STOPPING
from zhisuan.gateway._exchange import Exchange
from zhisuan.gateway._express import Express, end_in_flight
from zhisuan.gateway._wire import Pool

MODEL = "m"


class Meter:
    """Records what the lane asks of the meter."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def start(self, ex: Exchange, replica: Replica) -> None:
        self.calls.append("start")

    def prepare(self, ex: Exchange) -> None:
        self.calls.append("prepare")

    def abandon(self, ex: Exchange) -> None:
        self.calls.append("abandon")

    def journal(self, ex: Exchange) -> bool:
        """The record durable: the lane writes the answer, then calls :meth:`account`."""
        ex.context["journaled"] = True
        return True

    def account(self, ex: Exchange) -> None:
        if ex.context.pop("journaled", False):
            self.finish(ex)  # set by ``_gateway``: what the gateway's finish records

    finish: Any = None


def _gateway(port: int, client: aiohttp.ClientSession | None = None) -> Any:
    spec = ReplicaSpec(model=MODEL, engine="transformers", device="cpu", model_path=None)
    replica = Replica(spec, state=ReplicaState.READY, endpoint=f"http://127.0.0.1:{port}")
    finished: list[Exchange] = []
    meter = Meter()
    meter.finish = finished.append
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
async def _running(
    client: aiohttp.ClientSession | None = None,
) -> AsyncIterator[tuple[Worker, Any]]:
    """A worker socket and a gateway state whose pool reaches it, both closed after."""
    worker = Worker()
    await worker.start()
    gw = _gateway(worker.port, client)
    try:
        yield worker, gw
    finally:
        gw.wire.close()
        await worker.stop()


def _lane(gw: Any, answers: list[Any], retries: list[int]) -> tuple[Express, Exchange]:
    ex = Exchange(request_id="req-1", endpoint="chat.completions", model=MODEL)
    lane = Express(
        gw,
        ex,
        "/v1/chat/completions",
        b"{}",
        lambda status, headers, body: answers.append((status, dict(headers), body)),
        lambda: retries.append(1),
    )
    return lane, ex


async def _warm(gw: Any, port: int) -> None:
    """One request on the task path, so the pool holds an idle connection."""
    resp = await gw.wire.post("127.0.0.1", port, "/v1/chat/completions", b"{}", {}, whole=True)
    await resp.read()
    resp.close()


async def _until(check: Any) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


def test_answers_from_the_workers_callback() -> None:
    async def main() -> None:
        async with _running() as (worker, gw):
            await _warm(gw, worker.port)
            answers: list[Any] = []
            lane, ex = _lane(gw, answers, [])
            assert lane.start()
            assert gw.replica.outstanding == 1
            await _until(lambda: answers)
            status, headers, body = answers[0]
            assert (status, body) == (200, b'{"usage":{}}')
            assert headers[b"x-request-id"] == b"req-1"
            assert headers[b"server-timing"] == b"worker;dur=1.5"
            assert headers[b"content-length"] == b"12"
            assert (ex.status, ex.prompt_tokens, ex.completion_tokens) == ("ok", 3, 5)
            assert gw.finished == [ex] and gw.meter.calls == ["start", "prepare"]
            assert gw.replica.outstanding == 0
            pooled = gw.wire.idle("127.0.0.1", worker.port)
            assert pooled is not None  # back in the pool
            gw.wire.release(pooled)

    asyncio.run(main())


def test_without_an_idle_connection_the_task_path_takes_it() -> None:
    async def main() -> None:
        async with _running() as (_, gw):
            lane, ex = _lane(gw, [], [])
            assert not lane.start()
            assert (ex.replica, gw.replica.outstanding, gw.finished) == (None, 0, [])

    asyncio.run(main())


def test_a_stale_connection_goes_to_the_task_path() -> None:
    async def main() -> None:
        async with _running() as (worker, gw):
            await _warm(gw, worker.port)
            worker.mode = "close"
            answers: list[Any] = []
            retries: list[int] = []
            lane, _ = _lane(gw, answers, retries)
            assert lane.start()
            await _until(lambda: retries)
            assert answers == [] and gw.finished == []
            assert gw.meter.calls == ["start", "prepare", "abandon"]
            assert gw.replica.outstanding == 0

    asyncio.run(main())


def test_a_worker_that_dies_mid_answer_is_a_503_metered_once() -> None:
    async def main() -> None:
        async with _running() as (worker, gw):
            await _warm(gw, worker.port)
            worker.mode = "break"
            answers: list[Any] = []
            retries: list[int] = []
            lane, ex = _lane(gw, answers, retries)
            assert lane.start()
            await _until(lambda: answers)
            assert retries == [] and [a[0] for a in answers] == [503]
            assert gw.finished == [ex] and (ex.status, ex.http_status) == ("worker_error", 503)
            assert gw.replica.outstanding == 0

    asyncio.run(main())


async def _generating(gw: Any, worker: Worker) -> tuple[Express, Exchange, list[Any]]:
    """A request on the lane that the worker is still generating: the lane, its exchange
    and the answers the client got."""
    await _warm(gw, worker.port)
    worker.mode = "hang"
    answers: list[Any] = []
    lane, ex = _lane(gw, answers, [])
    assert lane.start()
    await asyncio.sleep(0.05)
    return lane, ex, answers


def test_a_client_that_leaves_cancels_the_generation_and_is_metered() -> None:
    async def main() -> None:
        async with aiohttp.ClientSession() as client, _running(client) as (worker, gw):
            lane, ex, answers = await _generating(gw, worker)
            lane.client_gone()
            await asyncio.wait_for(worker.gone.wait(), 2)  # the worker saw the disconnect
            await _until(lambda: gw.finished)
            assert answers == [] and gw.finished == [ex]
            assert (ex.status, ex.http_status, ex.completion_tokens) == ("client_abort", 499, 2)
            assert gw.replica.outstanding == 0

    asyncio.run(main())


def test_a_stopping_gateway_ends_the_lanes_requests_each_metered_and_answered() -> None:
    async def main() -> None:
        async with aiohttp.ClientSession() as client, _running(client) as (worker, gw):
            _, ex, answers = await _generating(gw, worker)
            other = SimpleNamespace()  # another gateway of the process: its lanes stay
            end_in_flight(other, STOPPING)
            assert answers == [] and gw.replica.outstanding == 1
            end_in_flight(gw, STOPPING)
            assert [a[0] for a in answers] == [503]
            assert b"gateway_stopping" in answers[0][2]
            await asyncio.wait_for(worker.gone.wait(), 2)  # the generation is cancelled
            await _until(lambda: gw.finished)
            assert gw.finished == [ex]  # with the worker's final count
            assert (ex.status, ex.http_status, ex.completion_tokens) == ("error", 503, 2)
            assert gw.replica.outstanding == 0
            end_in_flight(gw, STOPPING)  # ended once
            assert len(answers) == 1

    asyncio.run(main())
