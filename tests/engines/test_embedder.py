"""Embedding requests on the transformers engine share forward passes, tenants taking turns,
on the bundled all-MiniLM-L6-v2 (CPU)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import torch

from zhisuan.demo import minilm_dir
from zhisuan.engines.transformers import TransformersEngine, load
from zhisuan.errors import ContextLengthExceeded

SENTENCES = [f"sentence number {i} about {'foxes' if i % 2 else 'markets'}" for i in range(24)]


@pytest.fixture(scope="module", params=["fair", "fifo"])
def queue(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def engine(queue: str) -> Iterator[TransformersEngine]:
    options = {"queue": queue, "embed_batch_size": 8}
    engine = load(minilm_dir(), model_name="minilm", device="cpu", options=options)
    yield engine
    asyncio.run(engine.close())


def test_concurrent_requests_share_passes(engine: TransformersEngine) -> None:
    before = engine.stats()

    async def run() -> list[list[float]]:
        results = await asyncio.gather(*(engine.embed([s], "t") for s in SENTENCES))
        return [r.vectors[0] for r in results]

    vectors = asyncio.run(run())
    after = engine.stats()
    # the first went alone to the idle thread; the other 23 waited and went 8 at a time
    assert after.prefills - before.prefills == 1 + 3
    assert after.requests_finished - before.requests_finished == len(SENTENCES)
    alone = [asyncio.run(engine.embed([s])).vectors[0] for s in SENTENCES[:3]]
    for shared, single in zip(vectors, alone, strict=False):
        assert torch.allclose(torch.tensor(shared), torch.tensor(single), atol=1e-5)


def test_a_tenants_request_waits_its_turn_not_the_others_backlog(
    engine: TransformersEngine, queue: str
) -> None:
    order: list[str] = []

    async def one(name: str, texts: list[str], tenant: str) -> None:
        await engine.embed(texts, tenant)
        order.append(name)

    async def run() -> None:
        bulk = [one(f"bulk{i}", SENTENCES[:8], "bulk") for i in range(4)]  # a pass each
        await asyncio.gather(*bulk, one("small", ["hello"], "small"))

    asyncio.run(run())
    if queue == "fair":
        # bulk0 found the thread idle; then bulk1 (a whole pass), then small's turn
        assert order.index("small") == 2, order
    else:
        assert order[-1] == "small", order


def test_a_text_too_long_fails_its_request_alone(engine: TransformersEngine) -> None:
    async def run() -> list[object]:
        first = engine.embed(SENTENCES[:8], "a")  # keeps the thread while the others wait
        return await asyncio.gather(
            first,
            engine.embed(["short one"], "a"),
            engine.embed(["ok", "word " * 400], "b"),
            engine.embed(["another"], "c"),
            return_exceptions=True,
        )

    results = asyncio.run(run())
    assert isinstance(results[2], ContextLengthExceeded) and results[2].param == "input"
    for ok in (results[1], results[3]):
        assert not isinstance(ok, BaseException)
        assert len(ok.vectors) == 1 and ok.prompt_tokens > 0  # type: ignore[attr-defined]


def test_a_request_whose_client_left_leaves_the_line_at_once(engine: TransformersEngine) -> None:
    async def run() -> tuple[int, int, int]:
        first = asyncio.ensure_future(engine.embed(SENTENCES[:8], "a"))  # holds the thread
        await asyncio.sleep(0)
        left = asyncio.ensure_future(engine.embed(["gone"], "b"))
        stays = asyncio.ensure_future(engine.embed(["stays"], "b"))
        await asyncio.sleep(0)
        queued = engine.stats().waiting
        left.cancel()  # the worker cancels the request when its client leaves
        await asyncio.sleep(0)
        after = engine.stats().waiting
        await asyncio.gather(first, stays)
        return queued, after, engine.stats().waiting

    assert asyncio.run(run()) == (2, 1, 0)
