"""A request sent to the replica ahead of its checks, against a real worker socket: the
checks run once it is on its way, a refusal withdraws it, and the refused caller's next
requests are checked first (the admission, key check and meter are stand-ins)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from _worker_stub import Worker

from zhisuan.cluster import Replica, ReplicaSpec, ReplicaState
from zhisuan.errors import RateLimited, ZhisuanError
from zhisuan.gateway import _serving
from zhisuan.gateway._auth import Principal
from zhisuan.gateway._exchange import Exchange
from zhisuan.gateway._serving import HotPath
from zhisuan.gateway._standing import WARY_S, Standing, peek
from zhisuan.gateway._wire import Pool

MODEL = "m"
CHAT = "/v1/chat/completions"
CALLER = Principal(tenant="team", key_prefix="zs-team", admin=False, models=(frozenset({MODEL}),))


def _body(**fields: Any) -> bytes:
    return json.dumps(
        {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]} | fields
    ).encode()


class Admit:
    """The admission: records what it saw of each request, refuses with ``refusal``."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self.refusal: ZhisuanError | None = None
        self.seen: list[tuple[str, str | None, int]] = []  # model, replica, outstanding

    async def __call__(self, principal: Principal, ex: Exchange) -> None:
        self.check(principal, ex)

    def check(self, principal: Principal, ex: Exchange) -> None:
        self.seen.append((ex.model, ex.replica, self.replica.outstanding))
        if not principal.allows(ex.model):
            raise ZhisuanError("not allowed")  # 500, as a stand-in only
        if self.refusal is not None:
            raise self.refusal


class Meter:
    def __init__(self) -> None:
        self.in_flight = 0
        self.finished: list[Exchange] = []
        self.accounted: list[Exchange] = []  # the lane's: journaled, answered, accounted

    def idle(self) -> bool:
        return self.in_flight == 0

    def begin(self, ex: Exchange) -> None: ...

    def start(self, ex: Exchange, replica: Replica) -> None: ...

    def prepare(self, ex: Exchange) -> None: ...

    def abandon(self, ex: Exchange) -> None: ...

    def journal(self, ex: Exchange) -> bool:
        ex.context["journaled"] = True
        return True

    def account(self, ex: Exchange) -> None:
        if ex.context.pop("journaled", False):
            self.accounted.append(ex)

    def finish(self, ex: Exchange) -> None:
        self.finished.append(ex)


class Cycle:
    """A request with its whole body in, as the protocol hands it over."""

    def __init__(self, body: bytes, path: str = CHAT) -> None:
        self.scope = {"path": path, "headers": []}
        self.body = body
        self.answers: list[tuple[int, dict[str, Any]]] = []
        self.on_lost: Any = None
        self.done = asyncio.Event()

    def take_body(self) -> bytes:
        return self.body

    def answer(self, status: int, headers: Any, body: bytes) -> None:
        self.answers.append((status, json.loads(body)))
        self.done.set()


@contextlib.asynccontextmanager
async def _running(caller: Principal = CALLER) -> AsyncIterator[tuple[Worker, Any, HotPath]]:
    worker = Worker()
    await worker.start()
    spec = ReplicaSpec(model=MODEL, engine="transformers", device="cpu", model_path=None)
    endpoint = f"http://127.0.0.1:{worker.port}"
    replica = Replica(spec, state=ReplicaState.READY, endpoint=endpoint)
    gw = SimpleNamespace(
        backend=SimpleNamespace(replicas=lambda model=None: [replica]),
        wire=Pool(),
        meter=Meter(),
        admit=Admit(replica),
        finished=[],
        replica=replica,
    )
    gw.finish = gw.finished.append
    gw.meter.accounted = gw.finished  # the lane finishes in two halves, the task path in one
    hot = HotPath(SimpleNamespace(check=lambda scope: caller), 1 << 20)  # type: ignore[arg-type]
    resp = await gw.wire.post("127.0.0.1", worker.port, CHAT, b"{}", {}, whole=True)
    await resp.read()  # the pool holds an idle connection
    resp.close()
    try:
        yield worker, gw, hot
    finally:
        gw.wire.close()
        await worker.stop()


async def _serve(hot: HotPath, gw: Any, body: bytes, path: str = CHAT) -> Cycle:
    cycle = Cycle(body, path)
    tasks: list[Any] = []
    hot.now(gw, cycle, tasks.append)
    assert not tasks  # nothing here goes on the task path
    await asyncio.wait_for(cycle.done.wait(), 2)
    return cycle


async def _run(task: Any) -> list[Any]:
    """Run a task the hot path started; what it sent the client."""
    sent: list[Any] = []

    async def receive() -> Any:
        await asyncio.sleep(5)  # the client stays

    async def send(message: Any) -> None:
        sent.append(message)

    await asyncio.wait_for(task({"path": CHAT}, receive, send), 2)
    return sent


def test_the_checks_run_once_the_request_is_on_its_way() -> None:
    async def main() -> None:
        async with _running() as (worker, gw, hot):
            cycle = await _serve(hot, gw, _body())
            assert cycle.answers == [(200, {"usage": {}})]
            assert gw.admit.seen == [(MODEL, None, 1)]  # sent, and no replica on the record yet
            assert worker.posts == 2  # the warm-up's and this one
            assert [ex.replica for ex in gw.finished] == ["m#0"]
            # it waits in its tenant's line at the worker, though admitted only after
            assert b"\r\nx-zhisuan-tenant: team\r\n" in worker.heads[-1].lower()

    asyncio.run(main())


def test_a_refusal_withdraws_the_request_and_the_caller_is_checked_first_after() -> None:
    async def main() -> None:
        async with _running() as (worker, gw, hot):
            worker.mode = "hang"
            gw.admit.refusal = RateLimited("Too many requests.", retry_after=3)
            cycle = await _serve(hot, gw, _body())
            assert cycle.answers[0][0] == 429
            await asyncio.wait_for(worker.gone.wait(), 2)  # sent, then its connection closed
            assert worker.posts == 2 and gw.replica.outstanding == 0
            cycle = await _serve(hot, gw, _body())  # checked first: never sent
            assert cycle.answers[0][0] == 429
            await asyncio.sleep(0.05)
            assert worker.posts == 2
            assert [seen[2] for seen in gw.admit.seen] == [1, 0]

    asyncio.run(main())


def test_an_invalid_request_is_withdrawn_and_answered_with_its_400() -> None:
    async def main() -> None:
        async with _running() as (worker, gw, hot):
            worker.mode = "hang"
            cycle = await _serve(hot, gw, _body(temperature="hot"))
            status, error = cycle.answers[0]
            assert (status, error["error"]["param"]) == (400, "temperature")
            await asyncio.wait_for(worker.gone.wait(), 2)
            assert gw.admit.seen == [] and gw.replica.outstanding == 0
            (refused,) = gw.meter.finished  # one record, under the caller's tenant and key
            assert (refused.status, refused.http_status, refused.model) == ("rejected", 400, MODEL)
            assert refused.context["tenant"] == "team"
            assert refused.context["key_prefix"] == "zs-team"

    asyncio.run(main())


@pytest.mark.parametrize(
    "body",
    [
        _body(model="other"),  # outside the caller's allow-list
        b'{"model": 3, "messages": []}',  # no model to route by
        b"not json",
    ],
)
def test_requests_that_are_not_sent_ahead(body: bytes) -> None:
    async def main() -> None:
        async with _running() as (worker, gw, hot):
            cycle = Cycle(body)
            tasks: list[Any] = []
            hot.now(gw, cycle, tasks.append)
            assert not tasks
            await asyncio.wait_for(cycle.done.wait(), 2)
            assert cycle.answers[0][0] in (400, 500)
            assert gw.replica.outstanding == 0
            assert all(seen[2] == 0 for seen in gw.admit.seen)
            assert worker.posts == 1
            if cycle.answers[0][0] == 400:  # refused for its body: metered all the same
                (refused,) = gw.meter.finished
                assert (refused.status, refused.http_status, refused.model) == ("rejected", 400, "")

    asyncio.run(main())


def test_a_busy_gateway_checks_first() -> None:
    async def main() -> None:
        async with _running() as (_, gw, hot):
            gw.meter.in_flight = 3
            cycle = await _serve(hot, gw, _body())
            assert cycle.answers == [(200, {"usage": {}})]
            assert gw.admit.seen == [(MODEL, None, 0)]  # checked, then sent

    asyncio.run(main())


def test_a_stream_is_sent_before_its_checks_and_its_task_reads_the_answer() -> None:
    async def main() -> None:
        async with _running() as (worker, gw, hot):
            tasks: list[Any] = []
            hot.now(gw, Cycle(_body(stream=True)), tasks.append)
            assert gw.admit.seen == [(MODEL, None, 1)]  # already sent
            sent = await _run(tasks[0])
            assert sent[0]["status"] == 200 and sent[-1]["more_body"] is False
            assert worker.posts == 2 and gw.replica.outstanding == 0
            assert [(ex.stream, ex.replica) for ex in gw.finished] == [(True, "m#0")]

    asyncio.run(main())


def test_a_stream_sent_on_a_connection_the_worker_had_closed_is_sent_again() -> None:
    async def main() -> None:
        async with _running() as (worker, gw, hot):
            worker.mode = "close once"
            tasks: list[Any] = []
            hot.now(gw, Cycle(_body(stream=True)), tasks.append)
            sent = await _run(tasks[0])
            assert sent[0]["status"] == 200 and sent[-1]["more_body"] is False
            assert worker.posts == 3 and gw.replica.outstanding == 0
            assert [ex.status for ex in gw.finished] == ["ok"]

    asyncio.run(main())


def test_a_refused_stream_is_withdrawn() -> None:
    async def main() -> None:
        async with _running() as (worker, gw, hot):
            worker.mode = "hang"
            gw.admit.refusal = RateLimited("Too many requests.", retry_after=3)
            cycle = await _serve(hot, gw, _body(stream=True))
            assert cycle.answers[0][0] == 429
            await asyncio.wait_for(worker.gone.wait(), 2)
            assert worker.posts == 2 and gw.replica.outstanding == 0

    asyncio.run(main())


def test_a_peek_the_validation_contradicts_takes_the_careful_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_serving, "peek", lambda body: ("elsewhere", False))

    anyone = Principal(tenant="team", key_prefix=None, admin=False)  # every model

    async def main() -> None:
        async with _running(anyone) as (worker, gw, hot):
            tasks: list[Any] = []
            hot.now(gw, Cycle(_body()), tasks.append)
            # withdrawn, then checked and, its pooled connection closed, on the task path
            assert len(tasks) == 1
            assert gw.admit.seen == [(MODEL, None, 0)]
            assert gw.replica.outstanding == 0
            for _ in range(100):
                if worker.posts == 2:
                    break
                await asyncio.sleep(0.01)
            assert worker.posts == 2  # the warm-up and the withdrawn one

    asyncio.run(main())


def test_standing_is_lost_for_a_while_by_a_refusal_of_the_caller() -> None:
    now = [100.0]
    standing = Standing(clock=lambda: now[0])
    other = Principal(tenant="other", key_prefix=None, admin=False)
    standing.refused(CALLER, ZhisuanError("the gateway failed"))  # a 500: no mark
    assert standing.good(CALLER)
    standing.refused(CALLER, RateLimited("Too many requests.", retry_after=1))
    assert not standing.good(CALLER) and standing.good(other)
    now[0] += WARY_S - 0.1
    standing.refused(CALLER, RateLimited("Too many requests.", retry_after=1))  # again
    now[0] += WARY_S - 0.1
    assert not standing.good(CALLER)
    now[0] += 0.2
    assert standing.good(CALLER)


def test_peek() -> None:
    assert peek(_body()) == (MODEL, False)
    assert peek(_body(stream=False)) == (MODEL, False)
    assert peek(_body(stream=True)) == (MODEL, True)
    assert peek(_body(stream="yes")) is None
    assert peek(b'{"model": null}') is None
    assert peek(b"[1, 2]") is None
    assert peek(b"\xff\xfe") is None
    assert peek(b"[" * 100_000) is None
    assert peek(b'{"model" : "a",\n "stream":true}') == ("a", True)
    assert peek(b'{"stream": null, "model": "a"}') == ("a", False)
    assert peek(b'{"model": "a\\"b"}') is None  # an escape: the careful way
    assert peek(b'{"model": "\xff"}') is None
    assert peek(b'{"model": "a", "stream": 1}') is None
    # a guess, which the validation checks: quoted text in a string is escaped, so it is
    # not taken; a nested key of that name first is, and the body then goes the careful way
    assert peek(b'{"messages": [{"content": "\\"model\\": \\"b\\""}], "model": "a"}') == (
        "a",
        False,
    )
    assert peek(b'{"metadata": {"model": "b"}, "model": "a"}') == ("b", False)
