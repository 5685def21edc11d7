"""The worker over the real ``transformers`` engine and the demo models."""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator

import openai
import pytest
from _worker_fakes import serve

from zhisuan.demo import minilm_dir, tiny_chat_dir
from zhisuan.engines.worker import create_app, load_engine
from zhisuan.engines.worker._registry import AnyEngine

pytest.importorskip("zhisuan.engines.transformers")

pytestmark = pytest.mark.slow


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)


@pytest.fixture(scope="module")
def minilm() -> Iterator[openai.OpenAI]:
    try:
        path = minilm_dir()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))

    def loader() -> AnyEngine:
        options = {"task": "embedding"}
        return load_engine("transformers", path, model_name="minilm", device="cpu", options=options)

    app = create_app(loader, model_name="minilm", engine_kind="transformers")
    with serve(app) as url, _client(url) as client:
        yield client


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    path = tiny_chat_dir()
    if not (path / "config.json").is_file():  # the demo is not built: a random tiny Llama
        from tiny_hf_models import build_tiny_llama

        path = build_tiny_llama(tmp_path_factory.mktemp("hf") / "tiny", context=256)

    def loader() -> AnyEngine:
        return load_engine("transformers", path, model_name="tiny", device="cpu", options={})

    app = create_app(loader, model_name="tiny", engine_kind="transformers")
    with serve(app) as url, _client(url) as client:
        yield client


def test_minilm_embeddings(minilm: openai.OpenAI) -> None:
    out = minilm.embeddings.create(
        model="minilm", input=["a cat sat on the mat", "stocks fell"], encoding_format="float"
    )
    assert len(out.data) == 2 and len(out.data[0].embedding) == 384
    assert out.usage.prompt_tokens > 4
    b64 = minilm.with_raw_response.embeddings.create(
        model="minilm", input="a cat sat on the mat", encoding_format="base64"
    )
    raw = b64.http_response.json()["data"][0]["embedding"]
    decoded = struct.unpack("<384f", base64.b64decode(raw))
    assert list(decoded) == pytest.approx(out.data[0].embedding, abs=1e-5)
    with pytest.raises(openai.BadRequestError):
        minilm.chat.completions.create(model="minilm", messages=[{"role": "user", "content": "x"}])


def test_tiny_chat(tiny: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Hello!"}]
    out = tiny.chat.completions.create(
        model="tiny",
        messages=messages,
        max_tokens=8,
        temperature=0,  # type: ignore[arg-type]
    )
    assert out.usage is not None and 1 <= out.usage.completion_tokens <= 8
    chunks = list(
        tiny.chat.completions.create(
            model="tiny",
            messages=messages,  # type: ignore[arg-type]
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == out.choices[0].message.content
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == out.usage.completion_tokens
    text = tiny.completions.create(model="tiny", prompt="Once", max_tokens=4, temperature=0)
    assert text.usage is not None and text.usage.completion_tokens <= 4
