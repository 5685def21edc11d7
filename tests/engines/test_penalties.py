"""Presence and frequency penalties: the worker passes them on, the transformers engine
applies OpenAI's definition to each penalised row.

``logit[j] -= count[j] * frequency_penalty + (count[j] > 0) * presence_penalty``, where
``count[j]`` counts token ``j`` among the tokens generated so far for the request (never
the prompt's). The engine tests use the demo model ``zhisuan-tiny-chat``: asked to count
to ten it answers greedily ``1, 2, 2, 4, 4, ...``, repeating tokens that a penalty then
steers away from. The llama.cpp engine has its own tests (``test_llamacpp_sampling.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import torch
from _worker_fakes import FakeEngine, serve

from zhisuan.engines.base import Delta
from zhisuan.engines.transformers import TransformersEngine, _select, load
from zhisuan.engines.transformers._sampling import Penalties, penalize
from zhisuan.engines.worker import create_app
from zhisuan.protocol import SamplingParams

COUNT = [{"role": "user", "content": "Count from 1 to 10."}]


# -- the adjustment itself ------------------------------------------------------------------


def test_penalize_takes_frequency_per_count_and_presence_once() -> None:
    logits = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    counts = torch.tensor([0, 2, 0, 1, 3])
    out = penalize(logits, counts, presence=0.5, frequency=0.25)
    assert out.dtype == torch.float32
    assert out.tolist() == [1.0, 2.0 - 0.5 - 0.5, 3.0, 4.0 - 0.25 - 0.5, 5.0 - 0.75 - 0.5]
    # negative penalties make repeats more likely
    assert penalize(logits, counts, presence=-1.0, frequency=-1.0).tolist() == [
        1.0,
        5.0,
        3.0,
        6.0,
        9.0,
    ]


def test_penalties_count_the_generated_tokens_as_they_come() -> None:
    penalties = Penalties(presence=1.0, frequency=0.5)
    zeros = torch.zeros(5, dtype=torch.bfloat16)
    assert penalties.apply(zeros, []).tolist() == [0.0] * 5  # the first token: nothing yet
    assert penalties.apply(zeros, [1, 1, 3]).tolist() == [0.0, -2.0, 0.0, -1.5, 0.0]
    # the next step adds only the new token to the counts
    assert penalties.apply(zeros, [1, 1, 3, 3, 0]).tolist() == [-1.5, -2.0, 0.0, -2.0, 0.0]


def test_no_penalties_means_no_penalties_object() -> None:
    assert Penalties.of(0.0, 0.0) is None
    assert Penalties.of(0.0, -0.5) is not None
    assert Penalties.of(2.0, 0.0) is not None


# -- the transformers engine -----------------------------------------------------------------


@pytest.fixture(scope="module")
def chat(demo_dir: Path) -> Iterator[TransformersEngine]:
    engine = load(demo_dir, model_name="tiny", device="cpu", options={"max_batch": 8})
    yield engine
    asyncio.run(engine.close())


def greedy(max_tokens: int = 24, **kw: Any) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, **kw)


async def collect(
    engine: TransformersEngine, params: SamplingParams, *, ignore_eos: bool = False
) -> tuple[str, list[Delta]]:
    prompt = engine.render_chat(COUNT)
    deltas = [d async for d in engine.generate(prompt, params, "t", ignore_eos=ignore_eos)]
    return "".join(d.text for d in deltas), deltas


def text_of(engine: TransformersEngine, params: SamplingParams) -> str:
    return asyncio.run(collect(engine, params))[0]


@pytest.fixture(scope="module")
def hf_model(demo_dir: Path) -> tuple[Any, Any]:
    """The demo model's tokenizer and model, loaded apart from the engine."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoTokenizer.from_pretrained(demo_dir), AutoModelForCausalLM.from_pretrained(demo_dir)


def reference(
    hf_model: tuple[Any, Any], prompt: str, n: int, presence: float, frequency: float
) -> str:
    """Greedy decoding written out: the full sequence through the model at every step,
    the penalties applied to its last logits, stopping at EOS."""
    tokenizer, model = hf_model
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    eos = model.generation_config.eos_token_id
    ends = set(eos) if isinstance(eos, list) else {eos, tokenizer.eos_token_id}
    counts = torch.zeros(model.config.vocab_size)
    generated: list[int] = []
    with torch.inference_mode():
        for _ in range(n):
            logits = model(torch.tensor([ids + generated])).logits[0, -1].float()
            logits = logits - counts * frequency - (counts > 0).float() * presence
            token = int(torch.argmax(logits))
            if token in ends:
                break
            generated.append(token)
            counts[token] += 1
    return str(tokenizer.decode(generated, skip_special_tokens=True))


def test_a_frequency_penalty_changes_a_greedy_answer_that_repeats(chat: TransformersEngine) -> None:
    plain = text_of(chat, greedy())
    tokens = chat._tokenizer(plain, add_special_tokens=False)["input_ids"]
    assert len(set(tokens)) < len(tokens), f"the unpenalised answer repeats no token: {plain!r}"
    assert text_of(chat, greedy(frequency_penalty=2.0)) != plain
    assert text_of(chat, greedy(presence_penalty=2.0)) != plain
    assert text_of(chat, greedy(frequency_penalty=0.0, presence_penalty=0.0)) == plain


@pytest.mark.parametrize(
    ("presence", "frequency"), [(0.0, 2.0), (0.7, 0.0), (0.2, 0.2), (-1.0, -0.5)]
)
def test_penalised_greedy_decoding_matches_the_definition(
    chat: TransformersEngine, hf_model: tuple[Any, Any], presence: float, frequency: float
) -> None:
    params = greedy(40, presence_penalty=presence, frequency_penalty=frequency)
    expected = reference(hf_model, chat.render_chat(COUNT), 40, presence, frequency)
    assert text_of(chat, params) == expected


def test_only_penalised_rows_leave_the_batched_argmax(
    chat: TransformersEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A greedy row without penalties takes the batch's one argmax, as before; a penalised
    row is chosen on its own; neither changes the other's answer."""
    alone_plain = asyncio.run(collect(chat, greedy(16), ignore_eos=True))[0]
    alone_penalised = asyncio.run(
        collect(chat, greedy(16, frequency_penalty=2.0), ignore_eos=True)
    )[0]
    sampled: list[float] = []
    real = _select.sample_row

    def spy(logits: Any, temperature: float, top_p: float, generator: Any) -> int:
        sampled.append(temperature)
        return real(logits, temperature, top_p, generator)

    monkeypatch.setattr(_select, "sample_row", spy)

    async def together() -> list[str]:
        runs = [
            collect(chat, greedy(16), ignore_eos=True),
            collect(chat, greedy(16, frequency_penalty=2.0), ignore_eos=True),
            collect(chat, greedy(16), ignore_eos=True),
        ]
        return [text for text, _ in await asyncio.gather(*runs)]

    assert asyncio.run(together()) == [alone_plain, alone_penalised, alone_plain]
    assert len(sampled) == 16  # the penalised request's tokens, and no one else's


def test_a_penalised_sampled_request_repeats_with_its_seed(chat: TransformersEngine) -> None:
    params = SamplingParams(
        max_tokens=16, temperature=0.9, seed=7, presence_penalty=0.5, frequency_penalty=0.5
    )
    assert text_of(chat, params) == text_of(chat, params)


# -- the worker --------------------------------------------------------------------------------


class RecordingEngine(FakeEngine):
    """The fake engine, keeping the sampling parameters of every generation."""

    def __init__(self) -> None:
        super().__init__("fake-chat", context_length=64)
        self.params: list[SamplingParams] = []

    def generate(self, prompt: str, params: SamplingParams, request_id: str) -> Any:
        self.params.append(params)
        return super().generate(prompt, params, request_id)


def test_the_worker_passes_the_penalties_on() -> None:
    engine = RecordingEngine()
    app = create_app(lambda: engine, model_name="fake-chat", engine_kind="fake")
    with (
        serve(app) as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client,
    ):
        messages: Any = [{"role": "user", "content": "hi"}]
        client.chat.completions.create(
            model="fake-chat",
            messages=messages,
            max_tokens=2,
            presence_penalty=0.5,
            frequency_penalty=-1.25,
        )
        client.completions.create(
            model="fake-chat", prompt="hi", max_tokens=2, frequency_penalty=2.0
        )
        client.chat.completions.create(model="fake-chat", messages=messages, max_tokens=2)
    got = [(p.presence_penalty, p.frequency_penalty) for p in engine.params]
    assert got == [(0.5, -1.25), (0.0, 2.0), (0.0, 0.0)]
