"""The llama.cpp engine answers the same request sent again the same, bit for bit.

llama.cpp rounds a token evaluated alone differently from one evaluated in a batch, and the
context keeps what earlier requests evaluated: the first request for a prompt (evaluated in
one batch) and the same request again (only its last token evaluated, alone) got different
log-probabilities, and a seeded sampled request could get different text. On the demo GGUF,
"Tell me a story." at temperature 1 with seed 225 took another token from its second token
on. The engine now evaluates a prompt's last token alone every time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from zhisuan.engines.llamacpp import LlamaCppEngine, load
from zhisuan.protocol import SamplingParams

pytestmark = pytest.mark.llamacpp

STORY = [{"role": "user", "content": "Tell me a story."}]
SAMPLING = {
    "seeded": {"temperature": 1.0, "seed": 225},  # the old cache changed its second token
    "logprobs": {"temperature": 1.0, "seed": 7, "logprobs": 5},
    "greedy-logprobs": {"temperature": 0.0, "logprobs": 2},
}

Answer = tuple[str, list[tuple[int, float, list[tuple[int, float]]]]]
Load = Callable[..., LlamaCppEngine]


@pytest.fixture
def fresh(demo_gguf: Path) -> Iterator[Load]:
    """Loads the demo GGUF anew at each call (a context that holds nothing yet)."""
    engines: list[LlamaCppEngine] = []

    def make(**options: Any) -> LlamaCppEngine:
        opts = {"n_ctx": 512, "n_threads": 2, **options}
        engines.append(load(demo_gguf, model_name="tiny", device="cpu", options=opts))
        return engines[-1]

    yield make
    for engine in engines:
        asyncio.run(engine.close())


def ask(engine: LlamaCppEngine, prompt: str, sampling: dict[str, Any]) -> Answer:
    """The text and the log-probabilities (token, value, top) of one request."""
    params = SamplingParams(max_tokens=12, **sampling)

    async def go() -> Answer:
        deltas = [d async for d in engine.generate(prompt, params, "repeat")]
        entries = [e for d in deltas for e in d.logprobs or []]
        tops = [(e.token.id, e.token.logprob, [(t.id, t.logprob) for t in e.top]) for e in entries]
        return "".join(d.text for d in deltas), tops

    return asyncio.run(go())


def prompts(engine: LlamaCppEngine) -> dict[str, str]:
    story = engine.render_chat(STORY)
    return {"story": story, "longer": story + "Once upon a time"}  # the story extended


@pytest.mark.parametrize("sampling", list(SAMPLING), ids=list(SAMPLING))
def test_the_same_request_twice_gives_the_same_answer(fresh: Load, sampling: str) -> None:
    engine = fresh()
    story = prompts(engine)["story"]
    first = ask(engine, story, SAMPLING[sampling])
    assert ask(engine, story, SAMPLING[sampling]) == first
    assert ask(engine, story, SAMPLING[sampling]) == first


@pytest.mark.parametrize("sampling", list(SAMPLING), ids=list(SAMPLING))
def test_a_longer_prompt_between_changes_nothing(fresh: Load, sampling: str) -> None:
    """A request that extends the prompt (a chat's next turn) reuses its rows and leaves them."""
    engine = fresh()
    texts = prompts(engine)
    first = ask(engine, texts["story"], SAMPLING[sampling])
    ask(engine, texts["longer"], SAMPLING[sampling])
    assert ask(engine, texts["story"], SAMPLING[sampling]) == first


def test_a_longer_prompt_reuses_what_the_context_holds(fresh: Load) -> None:
    """Only the new tokens of a prompt that extends the one before are evaluated."""
    engine = fresh()
    texts = prompts(engine)
    llm = engine._llm
    evaluated: list[int] = []
    evaluate = llm.eval

    def counted(tokens: list[int]) -> None:
        evaluated.append(len(tokens))
        evaluate(tokens)

    llm.eval = counted
    ask(engine, texts["story"], SAMPLING["greedy-logprobs"])
    story = engine.count_tokens(texts["story"])
    assert evaluated[:2] == [story - 1, 1]  # the prompt but its last token, then that alone
    evaluated.clear()
    ask(engine, texts["longer"], SAMPLING["greedy-logprobs"])
    longer = engine.count_tokens(texts["longer"])
    assert sum(evaluated[:2]) <= longer - story + 1  # the new tokens (and the last), no more
