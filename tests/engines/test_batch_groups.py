"""With a queue, the transformers engine prefills the requests that free slots admit in
groups as large as the batch, not one group per iteration (``Batcher._hold``).

A real tiny Llama and the engine's own scheduler thread, four slots; the test only watches
the model's forward passes, and holds the first until every request is queued, so the
iterations are the same on every run.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tiny_hf_models import build_tiny_llama  # tests/engines is on sys.path (rootdir import)

from zhisuan.engines.transformers import TransformersEngine, load
from zhisuan.protocol import SamplingParams

PROMPTS = ["The quick brown fox", "Numbers 0 1 2 3", "A private model service", "你好"]


class Passes:
    """Wraps the engine's model: logs each pass, ``P`` (a prefill: more than one new token
    per row) or ``D`` (a decode step) with its rows, and holds the first until released."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.log: list[str] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, **kwargs: Any) -> Any:
        self.entered.set()
        self.release.wait(30)
        rows, width = kwargs["input_ids"].shape
        self.log.append(f"{'P' if width > 1 else 'D'}{rows}")
        return self.model(**kwargs)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[TransformersEngine]:
    tiny = build_tiny_llama(tmp_path / "tiny")
    engine = load(tiny, model_name="tiny", device="cpu", options={"max_batch": 4})
    yield engine
    asyncio.run(engine.close())


async def _text(engine: TransformersEngine, prompt: str, budget: int) -> str:
    params = SamplingParams(max_tokens=budget, temperature=0.0)
    deltas = [d async for d in engine.generate(prompt, params, "test", ignore_eos=True)]
    assert deltas[-1].completion_tokens == budget
    return "".join(d.text for d in deltas)


def _passes(engine: TransformersEngine, first: int, budgets: list[int]) -> tuple[list[str], Passes]:
    """A request of ``first`` tokens runs alone while requests of ``budgets`` queue.

    Returns:
        Each queued request's text, and the passes.
    """
    batcher = engine._batcher
    assert batcher is not None
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(len(budgets))]

    async def main() -> tuple[list[str], Passes]:
        passes = batcher._model = Passes(batcher._model)
        try:
            alone = asyncio.create_task(_text(engine, PROMPTS[0], first))
            await asyncio.to_thread(passes.entered.wait, 30)
            queued = [
                asyncio.create_task(_text(engine, p, n))
                for p, n in zip(prompts, budgets, strict=True)
            ]
            while engine.stats().waiting < len(queued):
                await asyncio.sleep(0.001)
            passes.release.set()
            await alone
            return list(await asyncio.gather(*queued)), passes
        finally:
            passes.release.set()
            batcher._model = passes.model

    return asyncio.run(main())


def test_a_queue_is_prefilled_in_groups_as_large_as_the_batch(engine: TransformersEngine) -> None:
    """Twelve requests queue, budgets of two and three tokens in turn. Each group of four
    sees its two-token rows end a step before its three-token rows: admitting the two
    free slots then would split the batch into groups that each pay a prefill. Held one
    step, the slots join the next group: one prefill for every four, and the same text
    as each request alone."""
    budgets = [2, 3] * 6
    alone = [asyncio.run(_text(engine, PROMPTS[i % 4], n)) for i, n in enumerate(budgets)]
    before = engine.stats().prefills
    texts, passes = _passes(engine, 2, budgets)
    prefills = [p for p in passes.log if p[0] == "P"]
    assert prefills == ["P1", "P4", "P4", "P4"], passes.log
    assert engine.stats().prefills - before == len(prefills)
    assert texts == alone


def test_free_slots_wait_one_step_at_most(engine: TransformersEngine) -> None:
    """Budgets of two to five tokens in one group, with more waiting: the slot of the
    two-token row waits one step for the three-token row's, and then joins although the
    four-token row ends a step later."""
    _, passes = _passes(engine, 2, [2, 3, 4, 5, 2, 2, 2, 2])
    assert passes.log == ["P1", "D1", "P4", "D4", "D3", "P2", "D4", "P2", "D3"]


def test_free_slots_are_not_held_when_every_waiting_request_fits(
    engine: TransformersEngine,
) -> None:
    """Two requests queue behind one whose last token comes in the next step: both fit in
    the free slots, so they join at once."""
    _, passes = _passes(engine, 3, [3, 3])
    assert passes.log == ["P1", "D1", "P2", "D3", "D2"]
