"""The ``llamacpp`` engine behind the worker, driven by the ``openai`` client.

Uses the demo GGUF (``zhisuan.demo.tiny_chat_gguf()``) when it has been built, else a tiny
random Llama exported to GGUF on the fly (random weights suffice for the plumbing:
counts, stops, streaming, cancellation, serialisation).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import openai
import pytest
from _worker_fakes import serve

from zhisuan.demo import tiny_chat_gguf
from zhisuan.engines.base import Delta
from zhisuan.engines.worker import create_app, load_engine
from zhisuan.engines.worker._registry import AnyEngine
from zhisuan.errors import EngineUnavailable

MESSAGES = [{"role": "user", "content": "Hello there"}]


def test_missing_library_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    from zhisuan.engines import llamacpp

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # makes the import fail
    with pytest.raises(EngineUnavailable) as info:
        llamacpp.load(Path("x.gguf"), model_name="m", device="cpu", options={})
    assert "pip install 'zhisuan[llamacpp]'" in str(info.value)


@pytest.fixture(scope="module")
def gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("llama_cpp")
    path = tiny_chat_gguf()
    if path.is_file():
        return path
    pytest.importorskip("torch")
    from tiny_hf_models import build_tiny_llama

    from zhisuan.demo._gguf_export import export_llama_to_gguf

    base = tmp_path_factory.mktemp("gguf")
    hf = build_tiny_llama(base / "hf", context=256)
    out = base / "tiny.gguf"
    export_llama_to_gguf(hf, out)
    return out


@pytest.fixture(scope="module")
def llama_url(gguf: Path) -> Iterator[str]:
    def loader() -> AnyEngine:
        options = {"n_ctx": 256, "n_threads": 2}
        return load_engine("llamacpp", gguf, model_name="tiny-gguf", device="cpu", options=options)

    app = create_app(loader, model_name="tiny-gguf", engine_kind="llamacpp")
    with serve(app) as url:
        yield url


@pytest.fixture(scope="module")
def llama(llama_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{llama_url}/v1", api_key="x", max_retries=0) as client:
        yield client


@pytest.mark.llamacpp
def test_chat_stream_matches_non_stream(llama: openai.OpenAI, llama_url: str) -> None:
    out = llama.chat.completions.create(
        model="tiny-gguf", messages=MESSAGES, max_tokens=12, temperature=0
    )
    assert out.usage is not None
    assert out.usage.prompt_tokens > 3
    assert 1 <= out.usage.completion_tokens <= 12
    if out.choices[0].finish_reason == "length":
        assert out.usage.completion_tokens == 12
    chunks = list(
        llama.chat.completions.create(
            model="tiny-gguf",
            messages=MESSAGES,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == out.choices[0].message.content
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == out.usage.prompt_tokens
    health = httpx.get(f"{llama_url}/health").json()
    assert health["engine"] == "llamacpp" and health["context_length"] == 256


@pytest.mark.llamacpp
def test_completion_budget_and_stop(llama: openai.OpenAI) -> None:
    out = llama.completions.create(
        model="tiny-gguf", prompt="The quick", max_tokens=6, temperature=0
    )
    assert out.usage is not None and out.usage.completion_tokens <= 6
    text = out.choices[0].text
    # random weights may emit control bytes: stop on a plain character we know is there
    plain = [c for c in text[1:] if c.isalnum() and text.find(c) >= 1]
    if plain:
        stop = plain[0]
        cut = llama.completions.create(
            model="tiny-gguf", prompt="The quick", max_tokens=6, temperature=0, stop=[stop]
        )
        assert cut.choices[0].text == text[: text.find(stop)]
        assert cut.choices[0].finish_reason == "stop"
    seeded = [
        llama.completions.create(
            model="tiny-gguf", prompt="The", max_tokens=8, temperature=1.0, seed=7
        )
        .choices[0]
        .text
        for _ in range(2)
    ]
    assert seeded[0] == seeded[1]


@pytest.mark.llamacpp
def test_errors(llama: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        llama.chat.completions.create(model="tiny-gguf", messages=MESSAGES, max_tokens=1000)
    assert info.value.body["code"] == "context_length_exceeded"  # type: ignore[index]
    assert "256" in info.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        llama.embeddings.create(model="tiny-gguf", input="x")


@pytest.mark.llamacpp
def test_requests_are_serialised_and_cancellable(gguf: Path) -> None:
    from zhisuan.engines.llamacpp import load
    from zhisuan.protocol import SamplingParams

    engine = load(gguf, model_name="m", device="cpu", options={"n_ctx": 256, "n_threads": 2})

    async def scenario() -> None:
        params = SamplingParams(max_tokens=100, temperature=0.0)
        first = engine.generate("The", params, "a", ignore_eos=True)
        await anext(first)  # holds the context while suspended
        second = asyncio.create_task(_drain(engine.generate("A", params, "b", ignore_eos=True)))
        await asyncio.sleep(0.05)
        assert (engine.stats().active, engine.stats().waiting) == (1, 1)
        await first.aclose()  # the client went away
        assert await asyncio.wait_for(second, 20) == 100
        assert (engine.stats().active, engine.stats().waiting) == (0, 0)
        await engine.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(("queue", "place"), [("fair", 1), ("fifo", 3)])
def test_waiting_requests_take_turns_between_tenants(gguf: Path, queue: str, place: int) -> None:
    """One request holds the context; three of tenant a wait, then one of tenant b. Taking
    turns, b's is next but one; first in, first out, it is last."""
    from zhisuan.engines.llamacpp import load
    from zhisuan.protocol import SamplingParams

    options = {"n_ctx": 256, "n_threads": 2, "queue": queue}
    engine = load(gguf, model_name="m", device="cpu", options=options)

    async def scenario() -> list[str]:
        ended: list[str] = []

        async def one(tenant: str, name: str) -> None:
            params = SamplingParams(max_tokens=4, temperature=0.0, tenant=tenant)
            await _drain(engine.generate("A", params, name, ignore_eos=True))
            ended.append(name)

        first = engine.generate("The", SamplingParams(max_tokens=100, tenant="a"), "first")
        await anext(first)  # holds the context while suspended
        names = [("a", "a1"), ("a", "a2"), ("a", "a3"), ("b", "b1")]
        tasks = [asyncio.create_task(one(tenant, name)) for tenant, name in names]
        while engine.stats().waiting < len(names):
            await asyncio.sleep(0.01)
        await first.aclose()  # type: ignore[attr-defined]
        await asyncio.wait_for(asyncio.gather(*tasks), 20)
        await engine.close()
        return ended

    ended = asyncio.run(scenario())
    assert [n for n in ended if n != "b1"] == ["a1", "a2", "a3"]
    assert ended.index("b1") == place, ended


async def _drain(deltas: AsyncIterator[Delta]) -> int:
    last = 0
    async for delta in deltas:
        last = delta.completion_tokens
    return last


@pytest.mark.llamacpp
def test_embeddings(gguf: Path) -> None:
    def loader() -> AnyEngine:
        options = {"embedding": True, "n_ctx": 256, "n_threads": 2}
        return load_engine("llamacpp", gguf, model_name="emb", device="cpu", options=options)

    app = create_app(loader, model_name="emb", engine_kind="llamacpp")
    with (
        serve(app) as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client,
    ):
        floats = client.embeddings.create(
            model="emb", input=["hello world", "the quick fox"], encoding_format="float"
        )
        assert len(floats.data) == 2
        vector = floats.data[0].embedding
        assert sum(x * x for x in vector) == pytest.approx(1.0, rel=1e-5)
        assert floats.usage.prompt_tokens > 2
        decoded = client.embeddings.create(model="emb", input="hello world")  # base64
        assert decoded.data[0].embedding == pytest.approx(vector, abs=1e-6)
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="emb", messages=MESSAGES)  # type: ignore[arg-type]


@pytest.mark.llamacpp
def test_every_seed_is_repeatable(gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """llama.cpp keeps 32 bits of a seed and takes 0xFFFFFFFF for "random": each request's
    seed is mapped into 0 .. 2**32 - 2, so -1 and 2**32 - 1 repeat, and 5 and 5 + 2**32
    differ."""
    from zhisuan.engines.llamacpp import load
    from zhisuan.protocol import SamplingParams

    engine = load(gguf, model_name="m", device="cpu", options={"n_ctx": 256, "n_threads": 2})
    seeds: list[int] = []
    real = engine._llm.set_seed

    def spy(seed: int) -> None:
        seeds.append(seed)
        real(seed)

    monkeypatch.setattr(engine._llm, "set_seed", spy)

    async def text(seed: int) -> str:
        params = SamplingParams(max_tokens=12, temperature=1.0, seed=seed)
        return "".join([d.text async for d in engine.generate("The", params, "s")])

    async def scenario() -> dict[int, set[str]]:
        try:
            # the first request evaluates the prompt afresh, later ones reuse its cache:
            # numerics (and so what a seed draws) can differ between the two
            await text(1)
            await text(5)
            await text(5 + 2**32)
            return {s: {await text(s) for _ in range(3)} for s in (-1, 2**32 - 1, 2**63 - 1)}
        finally:
            await engine.close()

    outputs = asyncio.run(scenario())
    assert [len(texts) for texts in outputs.values()] == [1, 1, 1], outputs
    assert all(0 <= s < 2**32 - 1 for s in seeds), seeds
    assert seeds[1] != seeds[2]  # 5 and 5 + 2**32


@pytest.mark.llamacpp
def test_an_embedding_cancelled_while_it_waits_is_no_longer_counted(gguf: Path) -> None:
    from zhisuan.engines.llamacpp import load

    options = {"embedding": True, "n_ctx": 256, "n_threads": 2}
    engine = load(gguf, model_name="emb", device="cpu", options=options)

    async def scenario() -> None:
        async with engine._lock.hold("a"):  # another request holds the context
            queued = asyncio.create_task(engine.embed(["queued"], "b"))
            while engine.stats().waiting < 1:
                await asyncio.sleep(0.001)
            queued.cancel()  # its client went away
            with pytest.raises(asyncio.CancelledError):
                await queued
        assert (engine.stats().active, engine.stats().waiting) == (0, 0)
        assert len((await engine.embed(["after"], "b")).vectors) == 1
        await engine.close()

    asyncio.run(scenario())
