"""Which completion tokens get log-probabilities, the same on both local engines: the
end-of-sequence token that ends a completion gets none, and neither do the tokens a stop
string takes with it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _logprobs_answers import run

from zhisuan.protocol import SamplingParams


@pytest.fixture(
    scope="module", params=["transformers", pytest.param("llamacpp", marks=pytest.mark.llamacpp)]
)
def engine(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The demo chat model on each local engine."""
    if request.param == "transformers":
        yield request.getfixturevalue("demo")
        return
    from zhisuan.engines.llamacpp import load

    gguf: Path = request.getfixturevalue("demo_gguf")
    llama = load(gguf, model_name="tiny", device="cpu", options={"n_ctx": 512, "n_threads": 2})
    yield llama
    asyncio.run(llama.close())


def test_the_end_of_sequence_token_gets_none(engine: Any) -> None:
    text, deltas, entries = run(engine, SamplingParams(max_tokens=80, temperature=0, logprobs=1))
    assert deltas[-1].finish_reason == "stop"
    assert len(entries) == deltas[-1].completion_tokens - 1  # the EOS counts, and has none
    assert b"".join(e.token.bytes for e in entries).decode() == text


def test_a_stop_string_takes_its_tokens_with_it(engine: Any) -> None:
    plain, _, everything = run(engine, SamplingParams(max_tokens=24, temperature=0, logprobs=2))
    assert ", 4" in plain
    text, deltas, entries = run(
        engine, SamplingParams(max_tokens=24, temperature=0, logprobs=2, stop=[", 4"])
    )
    assert text == plain[: plain.index(", 4")]
    assert deltas[-1].finish_reason == "stop"
    assert entries == everything[: len(entries)]
    assert b"".join(e.token.bytes for e in entries).decode() == text  # no token of ", 4"
