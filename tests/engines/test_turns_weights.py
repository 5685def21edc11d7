"""Weighted turns: a tenant of weight ``w`` has up to ``w`` requests started in its turn, in
its own order, before the next tenant's turn; the weight comes folded into the tenant header's
value (``team;weight=3``). The queue and the lock themselves, and the transformers engine
starting a tiny real model's requests in that order."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tiny_hf_models import build_tiny_llama  # tests/engines is on sys.path (rootdir import)

from zhisuan import store
from zhisuan.engines import _turns
from zhisuan.engines._turns import TurnLock, TurnQueue, split_tenant, tenant_value
from zhisuan.engines.transformers import load
from zhisuan.protocol import SamplingParams

H3, M2 = tenant_value("heavy", 3), tenant_value("mid", 2)  # "heavy;weight=3", "mid;weight=2"


def _queue(arrivals: list[tuple[str, str]], fair: bool = True) -> TurnQueue[str]:
    queue: TurnQueue[str] = TurnQueue(fair)
    for tenant, item in arrivals:
        queue.append(tenant, item)
    return queue


def test_the_tenant_header_carries_a_weight_other_than_1() -> None:
    assert tenant_value("team") == tenant_value("team", 1) == "team"  # as before weights
    assert tenant_value("team", 3) == "team;weight=3"
    assert split_tenant("team;weight=3") == ("team", 3)
    assert split_tenant("team") == ("team", 1) and split_tenant("") == ("", 1)


@pytest.mark.parametrize(
    ("value", "read"),
    [
        ("team;weight=0", ("team", 1)),  # clamped to 1..100
        ("team;weight=101", ("team", 100)),
        ("team;weight=" + "9" * 5000, ("team", 100)),  # more digits than int() reads
        ("team;weight=x", ("team", 1)),  # not a whole number: weight 1
        ("team;weight=-2", ("team", 1)),
        ("team;weight=2.5", ("team", 1)),
        ("team;weight=", ("team", 1)),
        ("team;weight=\u0663", ("team", 1)),  # a digit, but not an ASCII one
        ("team;other=3", ("team;other=3", 1)),  # no weight: the whole value is the line
    ],
)
def test_a_weight_the_queue_cannot_take_as_given(value: str, read: tuple[str, int]) -> None:
    assert split_tenant(value) == read


def test_the_queue_and_the_store_bound_weights_alike() -> None:
    assert _turns.MAX_WEIGHT == store.MAX_WEIGHT == 100


def test_each_tenant_has_up_to_its_weight_started_per_turn() -> None:
    arrivals = [(H3, f"h{i}") for i in range(7)]
    arrivals += [("light", f"l{i}") for i in range(3)] + [(M2, f"m{i}") for i in range(4)]
    queue = _queue(arrivals)
    assert len(queue) == 14 and queue.peek() == "h0"
    assert queue.drain() == [
        *("h0", "h1", "h2", "l0", "m0", "m1"),
        *("h3", "h4", "h5", "l1", "m2", "m3"),
        *("h6", "l2"),  # lines that empty leave the round; the rest go on taking turns
    ]


def test_weight_3_against_weight_1_is_three_to_one_while_both_wait() -> None:
    arrivals = [("light", f"l{i}") for i in range(4)] + [(H3, f"h{i}") for i in range(12)]
    order = _queue(arrivals).drain()
    assert "".join(item[0] for item in order) == "lhhh" * 4  # light's line opened first


def test_a_turn_ends_when_the_line_empties_and_the_tenant_rejoins_at_the_back() -> None:
    queue = _queue([(H3, "h0"), ("light", "l0"), ("light", "l1")])
    assert queue.popleft() == "h0"  # heavy's line empties after one: its turn ends there
    queue.append(H3, "h1")  # it rejoins the round at the back, with a fresh turn
    queue.append(H3, "h2")
    assert queue.popleft() == "l0"
    assert queue.drain() == ["h1", "h2", "l1"]


def test_a_turn_counts_the_items_started_in_it_before_others_came() -> None:
    queue = _queue([(H3, "h0"), (H3, "h1"), (H3, "h2"), (H3, "h3")])
    assert queue.popleft() == "h0"  # alone: its turn goes on ...
    queue.append("light", "l0")
    assert queue.drain() == ["h1", "h2", "l0", "h3"]  # ... for 3 in all, then light's


def test_a_lines_weight_is_the_one_its_latest_item_brought() -> None:
    queue = _queue([("team", "t0"), ("team", "t1"), ("other", "o0"), ("other", "o1")])
    queue.append(tenant_value("team", 2), "t2")  # its weight changed meanwhile
    assert queue.drain() == ["t0", "t1", "o0", "t2", "o1"]


def test_an_item_of_a_weighted_tenant_is_found_in_its_line() -> None:
    queue = _queue([(H3, "h0"), (H3, "h1"), ("light", "l0")])
    assert queue.remove(H3, "h0") and queue.remove("heavy", "h1")  # the line is the name's
    assert not queue.remove(H3, "l0")
    assert queue.drain() == ["l0"]


def test_fifo_keeps_arrival_order_whatever_the_weights() -> None:
    arrivals = [(H3, "h0"), ("light", "l0"), (H3, "h1"), (M2, "m0"), (H3, "h2"), ("light", "l1")]
    assert _queue(arrivals, fair=False).drain() == [item for _, item in arrivals]


def test_the_lock_is_handed_over_by_weight_and_a_cancelled_waiter_takes_no_turn() -> None:
    async def main() -> list[str]:
        lock, held = TurnLock(), []

        async def use(tenant: str, name: str) -> None:
            async with lock.hold(tenant):
                held.append(name)
                await asyncio.sleep(0)

        await lock.acquire("first")
        gone = asyncio.create_task(lock.acquire(H3))  # heavy's first waiter, which leaves
        await asyncio.sleep(0)
        tasks = [asyncio.create_task(use(H3, f"h{i}")) for i in range(5)]
        tasks += [asyncio.create_task(use("light", f"l{i}")) for i in range(2)]
        await asyncio.sleep(0)  # every task waits in its line
        gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)
        lock.release()
        await asyncio.gather(*tasks)
        assert not lock.locked()
        return held

    assert asyncio.run(main()) == ["h0", "h1", "h2", "l0", "h3", "h4", "l1"]


def test_the_engine_starts_a_weight_3_tenants_requests_three_to_one(tmp_path: Path) -> None:
    """One slot, so requests end in the order they start. Tenant a's first request runs
    while a's backlog and then b's queue behind it; from then on a (weight 3) and b
    (weight 1) take turns, three of a's requests started to one of b's."""
    engine = load(
        build_tiny_llama(tmp_path / "tiny"),
        model_name="tiny",
        device="cpu",
        options={"max_batch": 1},
    )
    a = tenant_value("a", 3)

    async def main() -> list[str]:
        ended: list[str] = []
        running = asyncio.Event()

        async def one(tenant: str, name: str, tokens: int = 4) -> None:
            params = SamplingParams(max_tokens=tokens, temperature=0.0, tenant=tenant)
            async for _ in engine.generate("Hello", params, name, ignore_eos=True):
                running.set()
            ended.append(name)

        first = asyncio.create_task(one(a, "a0", 200))
        await running.wait()  # a0 holds the slot; the others queue behind it
        arrivals = [(a, f"a{i}") for i in range(1, 8)] + [("b", f"b{i}") for i in range(3)]
        await asyncio.gather(first, *(one(tenant, name) for tenant, name in arrivals))
        await engine.close()
        return ended

    ended = asyncio.run(main())
    assert ended[0] == "a0", ended
    assert "".join(n[0] for n in ended[1:]) == "aaabaaabab", ended  # aaab, aaab, ab
    assert [n for n in ended if n[0] == "a"] == [f"a{i}" for i in range(8)]  # a's own order
