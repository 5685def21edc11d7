"""The transformers engine when one request goes wrong: its failure stays its own.

A temperature too small to divide by, a top_p too small for float32, logits that give no
distribution, a request cancelled while it waits: none of them may fail, or hold up, the
other requests.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import torch

from zhisuan.engines.transformers import TransformersEngine, _select, load
from zhisuan.engines.transformers._sampling import sample_row
from zhisuan.errors import EngineUnavailable
from zhisuan.protocol import SamplingParams

PROMPT = "The quick brown fox"


async def text_of(engine: TransformersEngine, params: SamplingParams, rid: str = "t") -> str:
    deltas = [d async for d in engine.generate(PROMPT, params, rid, ignore_eos=True)]
    assert deltas[-1].completion_tokens == params.max_tokens
    return "".join(d.text for d in deltas)


def test_a_tiny_temperature_is_greedy() -> None:
    logits = torch.tensor([1.0, 3.0, 2.0])
    for temperature in (1e-40, 1e-30, 1e-6):
        assert sample_row(logits, temperature, 1.0, None) == 1
        assert sample_row(logits, temperature, 0.5, None) == 1


def test_a_tiny_top_p_keeps_the_most_likely_token() -> None:
    logits = torch.tensor([1.0, 3.0, 2.0])
    for top_p in (1e-50, 1e-40, 1e-8):  # the first two are 0 in float32
        assert sample_row(logits, 1.0, top_p, torch.Generator().manual_seed(5)) == 1


def test_logits_that_are_not_finite_raise_a_value_error() -> None:
    logits = torch.tensor([1.0, float("nan"), 2.0])
    with pytest.raises(ValueError, match="not finite"):
        sample_row(logits, 1.0, 1.0, None)
    with pytest.raises(ValueError, match="not finite"):
        sample_row(logits, 0.7, 0.9, torch.Generator().manual_seed(3))


def test_a_tiny_temperature_generates_the_greedy_text(chat: TransformersEngine) -> None:
    greedy = asyncio.run(text_of(chat, SamplingParams(max_tokens=8, temperature=0.0)))
    tiny = asyncio.run(text_of(chat, SamplingParams(max_tokens=8, temperature=1e-40)))
    assert tiny == greedy


def test_a_row_that_cannot_be_sampled_fails_only_its_request(
    chat: TransformersEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = _select.sample_row

    def poisoned(logits: Any, temperature: float, top_p: float, generator: Any) -> int:
        if temperature == 0.5:  # the poisoned request's row: NaN logits
            logits = logits * float("nan")
        return real(logits, temperature, top_p, generator)

    monkeypatch.setattr(_select, "sample_row", poisoned)
    victim_params = SamplingParams(max_tokens=60, temperature=0.0)

    async def run() -> tuple[str, BaseException | str]:
        victim = chat.generate(PROMPT, victim_params, "victim", ignore_eos=True)
        first = await anext(victim)  # the victim is decoding
        poisoned_run = asyncio.create_task(
            text_of(chat, SamplingParams(max_tokens=20, temperature=0.5), "poisoned")
        )
        rest = [d async for d in victim]
        outcome = (await asyncio.gather(poisoned_run, return_exceptions=True))[0]
        assert rest[-1].completion_tokens == 60
        return first.text + "".join(d.text for d in rest), outcome

    text, outcome = asyncio.run(run())
    assert isinstance(outcome, EngineUnavailable)
    assert "not finite" in str(outcome)
    assert text == asyncio.run(text_of(chat, victim_params))


def test_a_request_cancelled_while_it_waits_leaves_the_queue(tiny_dir: Path) -> None:
    engine = load(tiny_dir, model_name="tiny", device="cpu", options={"max_batch": 1})

    async def run() -> None:
        long = SamplingParams(max_tokens=240, temperature=0.0, tenant="a")
        runner = engine.generate(PROMPT, long, "runner", ignore_eos=True)
        await anext(runner)  # holds the batch's one row

        async def wait(rid: str) -> str:
            return await text_of(engine, SamplingParams(max_tokens=4, tenant="a"), rid)

        first = asyncio.create_task(wait("first"))
        second = asyncio.create_task(wait("second"))  # behind ``first`` in tenant a's line
        while engine.stats().waiting < 2:
            await asyncio.sleep(0.001)
        finished = engine.stats().requests_finished
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        stats = engine.stats()
        assert stats.active == 1 and stats.waiting == 1  # at once, not when its turn comes
        assert stats.requests_finished == finished + 1
        await runner.aclose()  # type: ignore[attr-defined]
        await first
        while engine.stats().active:
            await asyncio.sleep(0.01)
        assert engine.stats().requests_finished == finished + 3  # counted once each

    try:
        asyncio.run(run())
    finally:
        asyncio.run(engine.close())
