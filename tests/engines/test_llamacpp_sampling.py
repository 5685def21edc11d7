"""The llama.cpp engine's sampling: OpenAI's penalties, greedy tiny temperatures, and a
budget that a character split across tokens cannot overrun.

The penalty and temperature tests use the demo GGUF ``zhisuan-tiny-chat``, asked to count
to ten (greedy, it answers ``1, 2, 2, 4, 4, ...``), against greedy decoding written out
over a second ``Llama`` that keeps every position's logits. The budget test uses a tiny
random Llama exported to GGUF: its random byte-level tokens split multi-byte characters.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from zhisuan.engines.llamacpp import LlamaCppEngine, load
from zhisuan.engines.llamacpp._sampling import sampler_options
from zhisuan.protocol import SamplingParams

COUNT = [{"role": "user", "content": "Count from 1 to 10."}]
OPTIONS = {"n_ctx": 512, "n_threads": 2}


# -- what is asked of llama-cpp-python ------------------------------------------------------


@pytest.mark.parametrize(
    ("temperature", "passed"), [(0.0, 0.0), (1e-40, 0.0), (9.9e-6, 0.0), (1e-5, 1e-5), (0.7, 0.7)]
)
def test_a_temperature_below_the_greedy_threshold_is_passed_as_0(
    temperature: float, passed: float
) -> None:
    options = sampler_options(SamplingParams(max_tokens=1, temperature=temperature))
    assert options["temp"] == passed


def test_the_sampler_has_openai_semantics() -> None:
    params = SamplingParams(max_tokens=1, top_p=0.9, presence_penalty=0.5, frequency_penalty=-1.0)
    assert sampler_options(params) == {
        "temp": 1.0,
        "top_p": 0.9,
        "top_k": 0,
        "min_p": 0.0,
        "repeat_penalty": 1.0,  # llama.cpp's default is 1.1
        "presence_penalty": 0.5,
        "frequency_penalty": -1.0,
    }


# -- penalties and temperatures on the demo model -------------------------------------------


@pytest.fixture(scope="module")
def engine(demo_gguf: Path) -> Iterator[LlamaCppEngine]:
    engine = load(demo_gguf, model_name="tiny", device="cpu", options=OPTIONS)
    yield engine
    asyncio.run(engine.close())


@pytest.fixture(scope="module")
def logits_llama(demo_gguf: Path) -> Any:
    from llama_cpp import Llama

    return Llama(str(demo_gguf), logits_all=True, verbose=False, **OPTIONS)


def text_of(engine: LlamaCppEngine, params: SamplingParams, *, ignore_eos: bool = False) -> str:
    async def run() -> str:
        prompt = engine.render_chat(COUNT)
        deltas = engine.generate(prompt, params, "t", ignore_eos=ignore_eos)
        return "".join([d.text async for d in deltas])

    return asyncio.run(run())


def reference(
    engine: LlamaCppEngine,
    llm: Any,
    n: int,
    presence: float,
    frequency: float,
    *,
    ignore_eos: bool = False,
) -> str:
    """Greedy decoding written out: the penalties on each position's logits, counting the
    tokens generated so far (not the prompt's), the end tokens barred for ``ignore_eos``."""
    import numpy as np

    prompt = llm.tokenize(engine.render_chat(COUNT).encode(), add_bos=False, special=True)
    ends = engine._end_ids()
    llm.reset()
    llm.eval(prompt)
    counts: collections.Counter[int] = collections.Counter()
    generated: list[int] = []
    for _ in range(n):
        logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        for token, count in counts.items():
            logits[token] -= count * frequency + presence
        if ignore_eos:
            logits[ends] = -np.inf
        token = int(np.argmax(logits))
        if token in ends:
            break
        generated.append(token)
        counts[token] += 1
        llm.eval([token])
    return bytes(llm.detokenize(generated, prev_tokens=prompt)).decode("utf-8", "ignore")


def greedy(max_tokens: int = 40, **kw: Any) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, **kw)


@pytest.mark.llamacpp
def test_a_frequency_penalty_changes_a_greedy_answer_that_repeats(engine: LlamaCppEngine) -> None:
    plain = text_of(engine, greedy())
    tokens = engine._llm.tokenize(plain.encode(), add_bos=False)
    assert len(set(tokens)) < len(tokens), f"the unpenalised answer repeats no token: {plain!r}"
    assert text_of(engine, greedy(frequency_penalty=2.0)) != plain
    assert text_of(engine, greedy(presence_penalty=2.0)) != plain


@pytest.mark.llamacpp
@pytest.mark.parametrize(
    ("presence", "frequency"), [(0.0, 0.0), (0.0, 2.0), (0.7, 0.0), (0.2, 0.2), (-1.0, -0.5)]
)
def test_greedy_decoding_matches_the_definition(
    engine: LlamaCppEngine, logits_llama: Any, presence: float, frequency: float
) -> None:
    """(0, 0): no penalty at all, llama.cpp's default repeat penalty included."""
    params = greedy(presence_penalty=presence, frequency_penalty=frequency)
    expected = reference(engine, logits_llama, 40, presence, frequency)
    assert text_of(engine, params) == expected


@pytest.mark.llamacpp
@pytest.mark.parametrize(("presence", "frequency"), [(0.0, 0.0), (0.0, 0.3), (0.3, 0.0)])
def test_penalties_count_every_generated_token(
    engine: LlamaCppEngine, logits_llama: Any, presence: float, frequency: float
) -> None:
    """200 tokens: llama.cpp's penalties look back 64 tokens unless told otherwise."""
    params = greedy(200, presence_penalty=presence, frequency_penalty=frequency)
    expected = reference(engine, logits_llama, 200, presence, frequency, ignore_eos=True)
    assert text_of(engine, params, ignore_eos=True) == expected


@pytest.mark.llamacpp
@pytest.mark.parametrize("temperature", [1e-40, 1e-38, 1e-6])
@pytest.mark.parametrize("top_p", [1.0, 0.9])
def test_a_tiny_temperature_is_greedy(
    engine: LlamaCppEngine, temperature: float, top_p: float
) -> None:
    plain = text_of(engine, greedy(24))
    params = SamplingParams(max_tokens=24, temperature=temperature, top_p=top_p, seed=3)
    assert text_of(engine, params) == plain


# -- the budget -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("llama_cpp")
    pytest.importorskip("torch")
    from tiny_hf_models import build_tiny_llama

    from zhisuan.demo._gguf_export import export_llama_to_gguf

    base = tmp_path_factory.mktemp("random-gguf")
    out = base / "tiny.gguf"
    export_llama_to_gguf(build_tiny_llama(base / "hf", context=256), out)
    return out


@pytest.mark.llamacpp
def test_a_budget_that_ends_inside_a_character_gives_max_tokens_tokens(random_gguf: Path) -> None:
    """llama-cpp-python's completion loop skipped its max_tokens check for a token that
    leaves a UTF-8 character unfinished (and for more tokens than the character needs when
    one token brings several of its bytes), so at such a budget it ran past ``max_tokens``.
    The engine gives the text of exactly ``max_tokens`` tokens, the unfinished character as
    U+FFFD, as the transformers engine gives it."""
    prompt = "The quick brown fox"
    engine = load(random_gguf, model_name="r", device="cpu", options={"n_ctx": 256})
    llm = engine._llm
    ids = llm.tokenize(prompt.encode(), add_bos=True, special=True)

    async def ours(m: int) -> tuple[str, int, str | None]:
        params = SamplingParams(max_tokens=m, temperature=0.0)
        deltas = [d async for d in engine.generate(prompt, params, f"m{m}")]
        last = deltas[-1]
        return "".join(d.text for d in deltas), last.completion_tokens, last.finish_reason

    inside: list[int] = []
    try:
        asyncio.run(ours(1))  # later calls find the prompt cached: every run takes one path
        ends = engine._end_ids()
        tokens: list[int] = []
        generation = llm.generate(ids, temp=0.0, top_k=0, min_p=0.0, repeat_penalty=1.0)
        for token in generation:
            if token in ends or len(tokens) == 40:
                break
            tokens.append(token)
        generation.close()
        for m in range(1, len(tokens) - 4):
            raw = bytes(llm.detokenize(tokens[:m]))
            assert asyncio.run(ours(m)) == (raw.decode("utf-8", "replace"), m, "length"), m
            if raw.decode("utf-8", "ignore") != raw.decode("utf-8", "replace"):
                inside.append(m)
    finally:
        asyncio.run(engine.close())
    assert inside, "no budget ends inside a character with these tokens"
