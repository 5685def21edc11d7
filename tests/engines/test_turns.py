"""Tenants take turns in an engine's queue: the queue and the lock themselves, and the
transformers engine admitting a tiny real model's requests in that order."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tiny_hf_models import build_tiny_llama  # tests/engines is on sys.path (rootdir import)

from zhisuan.engines._turns import TurnLock, TurnQueue, fair_option
from zhisuan.engines.transformers import load
from zhisuan.errors import InvalidParameter
from zhisuan.protocol import SamplingParams

ARRIVALS = [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("c", 1), ("b", 2)]


def test_the_queue_takes_the_tenants_in_turn_each_in_its_own_order() -> None:
    queue: TurnQueue[tuple[str, int]] = TurnQueue()
    for tenant, n in ARRIVALS:
        queue.append(tenant, (tenant, n))
    assert len(queue) == 6
    assert queue.peek() == ("a", 1)
    taken = [queue.popleft() for _ in range(4)]
    assert taken == [("a", 1), ("b", 1), ("c", 1), ("a", 2)]
    queue.append("c", ("c", 2))  # c's line had emptied: it rejoins the round at the back
    assert queue.drain() == [("b", 2), ("a", 3), ("c", 2)]
    assert len(queue) == 0
    with pytest.raises(IndexError):
        queue.peek()
    with pytest.raises(IndexError):
        queue.popleft()


def test_fifo_keeps_arrival_order() -> None:
    queue: TurnQueue[tuple[str, int]] = TurnQueue(fair=False)
    for tenant, n in ARRIVALS:
        queue.append(tenant, (tenant, n))
    assert queue.drain() == ARRIVALS


@pytest.mark.parametrize("fair", [True, False])
def test_an_item_whose_waiter_left_is_taken_out_of_its_line(fair: bool) -> None:
    queue: TurnQueue[tuple[str, int]] = TurnQueue(fair)
    for tenant, n in ARRIVALS:
        queue.append(tenant, (tenant, n))
    assert queue.remove("c", ("c", 1)) and len(queue) == 5  # c's only item: its line goes
    assert not queue.remove("c", ("c", 1))  # gone already
    assert queue.remove("a", ("a", 2))
    in_turn = [("a", 1), ("b", 1), ("a", 3), ("b", 2)]
    expected = in_turn if fair else [("a", 1), ("a", 3), ("b", 1), ("b", 2)]  # arrival order
    assert queue.drain() == expected and len(queue) == 0


def test_an_item_is_looked_for_in_its_own_tenants_line() -> None:
    queue: TurnQueue[str] = TurnQueue()
    queue.append("a", "x")
    assert not queue.remove("b", "x") and queue.remove("a", "x") and len(queue) == 0


def test_the_queue_option() -> None:
    assert fair_option({}) and fair_option({"queue": "fair"})
    assert not fair_option({"queue": "fifo"})
    with pytest.raises(InvalidParameter, match="unknown queue order 'lifo'"):
        fair_option({"queue": "lifo"})


@pytest.mark.parametrize(
    ("fair", "order"), [(True, ["a1", "b1", "a2", "a3"]), (False, ["a1", "a2", "a3", "b1"])]
)
def test_the_lock_is_handed_over_in_turns(fair: bool, order: list[str]) -> None:
    async def main() -> list[str]:
        lock, held = TurnLock(fair), []

        async def use(tenant: str, name: str) -> None:
            async with lock.hold(tenant):
                held.append(name)
                await asyncio.sleep(0)

        await lock.acquire("a")
        tasks = [asyncio.create_task(use(t, f"{t}{n}")) for t, n in ARRIVALS[:4]]
        await asyncio.sleep(0)  # every task waits in its line
        lock.release()
        await asyncio.gather(*tasks)
        assert not lock.locked()
        return held

    assert asyncio.run(main()) == order


def test_a_cancelled_waiter_leaves_its_line_and_never_keeps_the_lock() -> None:
    async def main() -> None:
        lock = TurnLock()
        await lock.acquire("a")
        gone = asyncio.create_task(lock.acquire("b"))
        handed = asyncio.create_task(lock.acquire("c"))
        last = asyncio.create_task(lock.acquire("d"))
        await asyncio.sleep(0)
        gone.cancel()  # cancelled while waiting: skipped
        await asyncio.sleep(0)
        lock.release()  # to c (b left its line) ...
        handed.cancel()  # ... which is cancelled before it runs: it passes the lock on
        await asyncio.gather(gone, handed, return_exceptions=True)
        await asyncio.wait_for(last, 1)  # d holds it
        assert lock.locked()
        lock.release()
        assert not lock.locked()

    asyncio.run(main())


@pytest.mark.parametrize(("queue", "place"), [("fair", (1, 2)), ("fifo", (4,))])
def test_the_engine_admits_waiting_requests_in_turns(
    tmp_path: Path, queue: str, place: tuple[int, ...]
) -> None:
    """One slot; four requests of tenant a, then one of tenant b. Taking turns, b's is next
    after the one running (the second or third to end); first in, first out, it is last."""
    engine = load(
        build_tiny_llama(tmp_path / "tiny"),
        model_name="tiny",
        device="cpu",
        options={"max_batch": 1, "queue": queue},
    )

    async def main() -> list[str]:
        ended: list[str] = []

        async def one(tenant: str, name: str) -> None:
            params = SamplingParams(max_tokens=12, temperature=0.0, tenant=tenant)
            async for _ in engine.generate("Hello", params, name, ignore_eos=True):
                pass
            ended.append(name)

        arrivals = [("a", "a0"), ("a", "a1"), ("a", "a2"), ("a", "a3"), ("b", "b0")]
        await asyncio.gather(*(one(tenant, name) for tenant, name in arrivals))
        await engine.close()
        return ended

    ended = asyncio.run(main())
    assert [n for n in ended if n != "b0"] == ["a0", "a1", "a2", "a3"]
    assert ended.index("b0") in place, ended
