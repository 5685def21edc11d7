"""The transformers engine: continuous batching, sampling, stops, cancellation.

The tests run a tiny random-init Llama (GQA) built in a tmp dir (``tiny_hf_models``), on
CPU; one test repeats the batching check on CUDA when a GPU is present. The embedding side
has its own tests (``test_transformers_embed.py``).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from zhisuan.engines.base import Delta, Engine
from zhisuan.engines.transformers import TransformersEngine, load
from zhisuan.engines.transformers._batcher import cache_keyword
from zhisuan.engines.transformers._detok import StopDetokenizer
from zhisuan.errors import ContextLengthExceeded, EngineUnavailable, InvalidParameter
from zhisuan.protocol import SamplingParams

PROMPTS = [
    "The quick brown fox",
    "你好",
    "Continuous batching lets concurrent requests share forward passes. A private model",
    "Numbers 0 1 2 3 4 5 6 7",
]


def greedy(max_tokens: int, **kw: Any) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, **kw)


async def collect(
    engine: TransformersEngine, prompt: str, params: SamplingParams, *, ignore_eos: bool = True
) -> tuple[str, list[Delta]]:
    deltas = [d async for d in engine.generate(prompt, params, "test", ignore_eos=ignore_eos)]
    return "".join(d.text for d in deltas), deltas


async def wait_idle(engine: TransformersEngine, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = engine.stats()
        if stats.active == 0 and stats.waiting == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"engine still busy: {engine.stats()}")


# -- loading and templates ----------------------------------------------------------------


def test_load_detects_chat_and_context(chat: TransformersEngine) -> None:
    assert isinstance(chat, Engine)
    assert chat.info.task == "chat"
    assert chat.info.engine == "transformers"
    assert chat.info.context_length == 256
    assert chat.info.device == "cpu"


def test_render_chat_adds_bos_once(chat: TransformersEngine) -> None:
    prompt = chat.render_chat([{"role": "user", "content": "hi"}])
    assert prompt == "<s><|user|>hi<|end|><|assistant|>"
    ids = chat._encode_prompt(prompt)
    bos = chat._tokenizer.bos_token_id
    assert ids[0] == bos and ids[1] != bos
    # a raw prompt without BOS text gets the BOS from the tokenizer
    assert chat._encode_prompt("hi")[0] == bos
    assert chat.count_tokens("hi") == len(chat._encode_prompt("hi"))  # BOS included


def test_render_chat_fallback_and_template_error(
    chat: TransformersEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    monkeypatch.setattr(chat._tokenizer, "chat_template", None)
    assert chat.render_chat(messages) == "system: be brief\nuser: hi\nassistant:"
    monkeypatch.setattr(
        chat._tokenizer, "chat_template", "{{ raise_exception('roles must alternate') }}"
    )
    with pytest.raises(InvalidParameter, match="roles must alternate") as info:
        chat.render_chat(messages)
    assert info.value.param == "messages"


# -- generation ---------------------------------------------------------------------------


def test_greedy_matches_hf_generate(chat: TransformersEngine) -> None:
    prompt = PROMPTS[2]
    ids = torch.tensor([chat._encode_prompt(prompt)])
    ref = chat._model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=12,
        min_new_tokens=12,
        do_sample=False,
        pad_token_id=chat._tokenizer.pad_token_id,
    )
    expected = chat._tokenizer.decode(ref[0, ids.shape[1] :], skip_special_tokens=True)
    text, deltas = asyncio.run(collect(chat, prompt, greedy(12)))
    assert text == expected
    assert deltas[-1].finish_reason == "length"
    assert deltas[-1].completion_tokens == 12
    assert all(d.prompt_tokens == ids.shape[1] for d in deltas)


def test_greedy_batched_equals_alone(chat: TransformersEngine) -> None:
    budgets = [24, 7, 16, 30]

    async def alone() -> list[str]:
        return [
            (await collect(chat, p, greedy(n)))[0] for p, n in zip(PROMPTS, budgets, strict=True)
        ]

    async def batched() -> list[str]:
        base = chat.stats().tokens_generated

        async def late(p: str, n: int, after: int) -> str:
            while chat.stats().tokens_generated < base + after:
                await asyncio.sleep(0.001)  # join while the others are mid-decode
            return (await collect(chat, p, greedy(n)))[0]

        afters = [0, 0, 10, 25, 5, 40, 60, 61]
        runs = [late(p, n, a) for p, n, a in zip(PROMPTS * 2, budgets * 2, afters, strict=True)]
        return list(await asyncio.gather(*runs))

    solo = asyncio.run(alone())
    together = asyncio.run(batched())
    assert together == solo * 2
    asyncio.run(wait_idle(chat))  # the last row retires right after its final delta


def test_seeded_sampling_repeatable_in_any_batch(chat: TransformersEngine) -> None:
    params = SamplingParams(max_tokens=20, temperature=1.0, top_p=0.9, seed=1234)

    async def run() -> tuple[str, list[str]]:
        alone = (await collect(chat, PROMPTS[0], params))[0]
        others = [collect(chat, p, SamplingParams(max_tokens=15, temperature=0.8)) for p in PROMPTS]
        results = await asyncio.gather(collect(chat, PROMPTS[0], params), *others)
        return alone, [r[0] for r in results]

    alone, batched = asyncio.run(run())
    assert batched[0] == alone
    other_seed = SamplingParams(max_tokens=20, temperature=1.0, top_p=0.9, seed=99)
    assert asyncio.run(collect(chat, PROMPTS[0], other_seed))[0] != alone


def test_stop_string_cuts_output(chat: TransformersEngine) -> None:
    full, _ = asyncio.run(collect(chat, PROMPTS[0], greedy(30)))
    # a stop string from the middle of the greedy output (spanning token boundaries)
    start = len(full) // 2
    stop = full[start : start + 3]
    expected = full[: full.find(stop)]
    text, deltas = asyncio.run(collect(chat, PROMPTS[0], greedy(30, stop=["zzzz-never", stop])))
    assert text == expected
    assert deltas[-1].finish_reason == "stop"
    assert deltas[-1].completion_tokens < 30


def test_eos_finishes_with_stop(chat: TransformersEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = torch.tensor([chat._encode_prompt(PROMPTS[1])])
    ref = chat._model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=8,
        min_new_tokens=8,
        do_sample=False,
        pad_token_id=chat._tokenizer.pad_token_id,
    )[0, ids.shape[1] :].tolist()
    k = next(i for i in range(1, 8) if ref[i] not in ref[:i])  # first new-token position
    monkeypatch.setattr(chat, "_eos_ids", frozenset({ref[k]}))
    text, deltas = asyncio.run(collect(chat, PROMPTS[1], greedy(8), ignore_eos=False))
    assert deltas[-1].finish_reason == "stop"
    assert deltas[-1].completion_tokens == k + 1  # the EOS token is counted, not shown
    assert text == chat._tokenizer.decode(ref[:k], skip_special_tokens=True)


def test_context_length_errors(chat: TransformersEngine) -> None:
    long_prompt = " ".join(["fox"] * 300)
    with pytest.raises(ContextLengthExceeded) as info:
        chat.generate(long_prompt, greedy(1), "r")
    assert info.value.limit == 256
    n = len(chat._encode_prompt(PROMPTS[0]))
    with pytest.raises(ContextLengthExceeded):
        chat.generate(PROMPTS[0], greedy(256 - n + 1), "r")
    _, deltas = asyncio.run(collect(chat, PROMPTS[0], greedy(256 - n)))
    assert deltas[-1].completion_tokens == 256 - n
    with pytest.raises(InvalidParameter):
        chat.generate(PROMPTS[0], greedy(0), "r")


def test_cancellation_frees_slots(chat: TransformersEngine) -> None:
    async def run() -> None:
        streams = [
            chat.generate(p, greedy(200), f"c{i}", ignore_eos=True) for i, p in enumerate(PROMPTS)
        ]
        for s in streams:
            await anext(s)
        assert chat.stats().active == len(PROMPTS)

        async def consume() -> None:
            async for _ in chat.generate(PROMPTS[0], greedy(200), "task", ignore_eos=True):
                pass

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.05)
        for s in streams:
            await s.aclose()  # type: ignore[attr-defined]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_idle(chat)

    before = chat.stats().tokens_generated
    asyncio.run(run())
    stats = chat.stats()
    assert stats.active == 0 and stats.waiting == 0
    assert stats.tokens_generated - before < 5 * 200  # nobody ran to the end


def test_single_token_budget(chat: TransformersEngine) -> None:
    asyncio.run(wait_idle(chat))
    before = chat.stats().prefills
    _, deltas = asyncio.run(collect(chat, PROMPTS[1], greedy(1)))
    assert deltas[-1].finish_reason == "length" and deltas[-1].completion_tokens == 1
    asyncio.run(wait_idle(chat))
    assert chat.stats().prefills == before + 1  # a request alone: one prefill pass


def test_forward_failure_fails_requests_not_engine(
    chat: TransformersEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = chat._batcher._model  # type: ignore[union-attr]

    def broken(**kwargs: Any) -> Any:
        raise RuntimeError("simulated device failure")

    monkeypatch.setattr(chat._batcher, "_model", broken)
    with pytest.raises(EngineUnavailable, match="simulated device failure"):
        asyncio.run(collect(chat, PROMPTS[0], greedy(5)))
    monkeypatch.setattr(chat._batcher, "_model", real)
    asyncio.run(wait_idle(chat))
    _, deltas = asyncio.run(collect(chat, PROMPTS[0], greedy(5)))
    assert deltas[-1].completion_tokens == 5


def test_requests_beyond_max_batch_wait(tiny_dir: Path) -> None:
    engine = load(tiny_dir, model_name="tiny", device="cpu", options={"max_batch": 2})

    async def run() -> list[str]:
        tasks = [asyncio.create_task(collect(engine, p, greedy(10))) for p in PROMPTS]
        seen_waiting = 0
        while not all(t.done() for t in tasks):
            seen_waiting = max(seen_waiting, engine.stats().waiting)
            assert engine.stats().active <= 2
            await asyncio.sleep(0.001)
        assert seen_waiting > 0
        return [(await t)[0] for t in tasks]

    try:
        results = asyncio.run(run())
        assert all(results)
        stats = engine.stats()
        assert stats.tokens_generated == 10 * len(PROMPTS)
        assert stats.busy_seconds > 0 and stats.requests_finished == len(PROMPTS)
        # two rows: each prefill pass admitted one or two requests
        assert -(-len(PROMPTS) // 2) <= stats.prefills <= len(PROMPTS)
    finally:
        asyncio.run(engine.close())


def test_detokenizer_multibyte_and_stop_holdback(chat: TransformersEngine) -> None:
    tok = chat._tokenizer
    text = "你好，世界！The quick brown fox"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    detok = StopDetokenizer(tok, [])
    pieces = [detok.step(ids[: i + 1], final=i == len(ids) - 1) for i in range(len(ids))]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)

    detok = StopDetokenizer(tok, ["brown fox"])
    out = ""
    for i in range(len(ids)):
        out += detok.step(ids[: i + 1])
        assert "你好，世界！The quick ".startswith(out)  # "b", "br"… held back, never sent
    assert detok.stopped
    assert out == "你好，世界！The quick "


def test_chat_engine_refuses_embed(chat: TransformersEngine) -> None:
    with pytest.raises(InvalidParameter):
        asyncio.run(chat.embed(["hi"]))


# -- GPU ----------------------------------------------------------------------------------


@pytest.mark.gpu
def test_cuda_batched_equals_alone(tiny_dir: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    engine = load(tiny_dir, model_name="tiny", device="cuda:0", options={})
    try:
        assert engine.info.device == "cuda:0"

        async def run() -> tuple[list[str], list[str]]:
            alone = [(await collect(engine, p, greedy(16)))[0] for p in PROMPTS]
            together = await asyncio.gather(*(collect(engine, p, greedy(16)) for p in PROMPTS))
            return alone, [t[0] for t in together]

        alone, together = asyncio.run(run())
        assert alone == together
    finally:
        asyncio.run(engine.close())


class _OldForward:
    def forward(self, input_ids: Any = None, past_key_values: Any = None) -> None: ...


class _NewForward:
    def forward(self, input_ids: Any = None, cache: Any = None, **kwargs: Any) -> None: ...


def test_cache_keyword_follows_the_model_forward() -> None:
    # the real model is covered by every generation test: under the name transformers
    # deprecates, its warning (an error in the tests) fails the generation
    assert cache_keyword(_OldForward()) == "past_key_values"
    assert cache_keyword(_NewForward()) == "cache"
