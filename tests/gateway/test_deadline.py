"""Budgets hold for requests billed by device time: they reserve ``budget_deadline_s`` of the
device, and the proxy ends them when it is up (a real worker socket and quota ledger; the
rest of the gateway is stand-ins)."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest
from test_ahead import Cycle, _body, _run
from test_ahead import _running as hot_running
from test_forward import MODEL, PATH, _append, _finished, _never, _running

from zhisuan.cluster import Replica, ReplicaSpec, ReplicaState
from zhisuan.errors import RateLimited
from zhisuan.gateway._admission import Admission
from zhisuan.gateway._auth import Principal
from zhisuan.gateway._exchange import Exchange
from zhisuan.gateway._meter import pricing_of
from zhisuan.gateway._proxy import forward
from zhisuan.gateway._quota import Limits, QuotaLedger
from zhisuan.protocol import ChatCompletionRequest
from zhisuan.settings import Settings

BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
PER_SECOND = (("cost_per_hour", 3600.0),)  # one unit of money per second of the device
PER_TOKEN = (("price_input_per_mtok", 1e6), ("price_output_per_mtok", 1e6))


def _admission(options: tuple[tuple[str, Any], ...], **settings_: Any) -> Admission:
    spec = ReplicaSpec(MODEL, "transformers", "cpu", None, options=options)
    replica = Replica(spec, state=ReplicaState.READY, endpoint="http://127.0.0.1:9")
    settings = Settings(budget_deadline_s=2.0, **settings_)
    gw = SimpleNamespace(
        settings=settings,
        backend=SimpleNamespace(replicas=lambda model=None: [replica]),
        meter=SimpleNamespace(
            pricing=lambda s: pricing_of(s, settings),
            begin=lambda ex: None,
            finish=lambda ex: None,
        ),
    )
    return Admission(gw, QuotaLedger(lambda sid, now: (0, 0.0)))  # type: ignore[arg-type]


def _caller(**limits: Any) -> Principal:
    return Principal("team", "zs-team00000", False, scopes=(("tenant:team", Limits(**limits)),))


def _request() -> Exchange:
    ex = Exchange(request_id="r", endpoint="chat.completions", model=MODEL)
    ex.context["request"] = ChatCompletionRequest.model_validate(BODY)
    ex.context["body_bytes"] = len(json.dumps(BODY))
    return ex


def test_a_budget_reserves_the_device_time_a_request_may_run() -> None:
    admission = _admission(PER_SECOND)
    admitted = []
    for _ in range(2):  # two seconds reserved each: 4.0 of a 5.0 budget
        ex = _request()
        admission.check(_caller(budget=5.0), ex)
        admitted.append(ex)
    assert [ex.context["deadline"] for ex in admitted] == [2.0, 2.0]
    with pytest.raises(RateLimited, match="Monthly budget reached"):
        admission.check(_caller(budget=5.0), _request())  # 6.0 would pass the budget


def test_a_deployment_may_set_its_own_deadline() -> None:
    admission = _admission((*PER_SECOND, ("budget_deadline_s", 0.5)))
    ex = _request()
    admission.check(_caller(budget=5.0), ex)
    assert ex.context["deadline"] == 0.5  # not the setting's 2.0
    for _ in range(9):  # 0.5 reserved each: ten fill the budget of 5.0
        admission.check(_caller(budget=5.0), _request())
    with pytest.raises(RateLimited, match="Monthly budget reached"):
        admission.check(_caller(budget=5.0), _request())


def test_no_deadline_without_a_budget_or_with_token_prices() -> None:
    for options, caller in (
        (PER_SECOND, _caller(rpm=100)),
        (PER_TOKEN, _caller(budget=100.0)),
        ((), _caller(budget=100.0)),  # device time at no price
    ):
        ex = _request()
        _admission(options).check(caller, ex)
        assert "deadline" not in ex.context


def test_a_deployment_priced_at_0_an_hour_is_free_where_the_default_is_not() -> None:
    admission = _admission((("cost_per_hour", 0.0),), device_cost_per_hour=3600.0)
    for _ in range(3):  # free: nothing reserved from a budget of 1.0, and no deadline
        ex = _request()
        admission.check(_caller(budget=1.0), ex)
        assert "deadline" not in ex.context


@pytest.mark.parametrize("mode", ["hang", "stall"])
def test_a_request_past_its_deadline_is_ended_metered_and_answered(mode: str) -> None:
    async def main() -> None:
        sent: list[Any] = []
        async with _running(mode) as gw:
            stopped: list[Exchange] = []
            gw.meter.stop_share = stopped.append
            ex = Exchange(request_id="req-1", endpoint="chat.completions", model=MODEL)
            ex.stream = mode == "stall"
            ex.context["deadline"] = 0.2
            await asyncio.wait_for(forward(gw, PATH, b"{}", ex, _never, _append(sent)), 10)
            await asyncio.wait_for(gw.worker.gone.wait(), 2)  # the generation is cancelled
            assert await _finished(gw) == [ex] and stopped == [ex]
            assert (ex.status, ex.http_status) == ("error", 504)
            assert not sent[-1].get("more_body") and b"deadline_exceeded" in sent[-1]["body"]
            assert sent[0]["status"] == (200 if ex.stream else 504)
            assert gw.replica.outstanding == 0

    asyncio.run(main())


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy"])
def test_a_request_with_a_deadline_takes_neither_shortcut(busy: bool) -> None:
    """Not sent ahead of its checks, nor on the express lane: on a task, which ends it."""
    caller = Principal(
        "team",
        "zs-team",
        False,
        models=(frozenset({MODEL}),),
        scopes=(("tenant:team", Limits(budget=5.0)),),
    )

    async def main() -> None:
        async with hot_running(caller) as (worker, gw, hot):
            gw.meter.in_flight = 3 if busy else 0
            checked = gw.admit.check

            def check(principal: Principal, ex: Exchange) -> None:
                checked(principal, ex)
                ex.context["deadline"] = 1.0  # as the admission sets it

            gw.admit.check = check
            gw.admit.deadline = lambda principal, model: 1.0
            tasks: list[Any] = []
            hot.now(gw, Cycle(_body()), tasks.append)
            assert len(tasks) == 1 and worker.posts == 1  # the pool's warm-up only
            sent = await _run(tasks[0])
            assert sent[0]["status"] == 200 and worker.posts == 2

    asyncio.run(main())
