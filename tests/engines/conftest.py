from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import openai
import pytest
from _worker_fakes import FakeEngine, serve

from zhisuan.demo import tiny_chat_dir, tiny_chat_gguf
from zhisuan.engines.worker import create_app

if TYPE_CHECKING:
    from zhisuan.engines.transformers import TransformersEngine


@pytest.fixture(scope="module")
def chat_engine() -> FakeEngine:
    return FakeEngine("fake-chat", context_length=64, eos_after=12)


@pytest.fixture(scope="module")
def chat_url(chat_engine: FakeEngine) -> Iterator[str]:
    app = create_app(lambda: chat_engine, model_name="fake-chat", engine_kind="fake")
    with serve(app) as url:
        yield url


@pytest.fixture(scope="module")
def embed_engine() -> FakeEngine:
    return FakeEngine("fake-embed", task="embedding", context_length=32)


@pytest.fixture(scope="module")
def embed_url(embed_engine: FakeEngine) -> Iterator[str]:
    app = create_app(lambda: embed_engine, model_name="fake-embed", engine_kind="fake")
    with serve(app) as url:
        yield url


@pytest.fixture(scope="module")
def client(chat_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{chat_url}/v1", api_key="x", max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def embed_client(embed_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{embed_url}/v1", api_key="x", max_retries=0) as c:
        yield c


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-init Llama (GQA) in HF format (``tiny_hf_models``)."""
    from tiny_hf_models import build_tiny_llama  # tests/engines is on sys.path (rootdir import)

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def chat(tiny_dir: Path) -> Iterator[TransformersEngine]:
    """The transformers engine over :func:`tiny_dir` on CPU, a batch of 8."""
    from zhisuan.engines.transformers import load

    engine = load(tiny_dir, model_name="tiny", device="cpu", options={"max_batch": 8})
    yield engine
    asyncio.run(engine.close())


@pytest.fixture(scope="module")
def demo_gguf() -> Path:
    """The demo chat model's GGUF (skips without llama-cpp-python or the built file)."""
    pytest.importorskip("llama_cpp")
    path = tiny_chat_gguf()
    if not path.is_file():
        pytest.skip("the demo GGUF zhisuan-tiny-chat is not built")
    return path


@pytest.fixture(scope="module")
def demo_dir() -> Path:
    """The demo chat model's HF directory (skips when it is not built)."""
    path = tiny_chat_dir()
    if not (path / "config.json").is_file():
        pytest.skip("the demo model zhisuan-tiny-chat is not built")
    return path


@pytest.fixture(scope="session")
def tiny_gguf(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_dir`` exported to GGUF: the same byte-level vocabulary, token for token (it
    splits ``你``)."""
    pytest.importorskip("llama_cpp")
    from zhisuan.demo._gguf_export import export_llama_to_gguf

    out = tmp_path_factory.mktemp("tiny-gguf") / "tiny.gguf"
    export_llama_to_gguf(tiny_dir, out)
    return out


@pytest.fixture(scope="module")
def demo(demo_dir: Path) -> Iterator[TransformersEngine]:
    """The transformers engine over the demo chat model on CPU, a batch of 8 (a module may
    name another engine ``demo``)."""
    from zhisuan.engines.transformers import load

    engine = load(demo_dir, model_name="tiny", device="cpu", options={"max_batch": 8})
    yield engine
    asyncio.run(engine.close())


@pytest.fixture(scope="module")
def hf() -> tuple[Any, Any]:
    """The demo chat model's tokenizer and model, apart from any engine (the reference)."""
    from _reference_logprobs import demo_reference

    return demo_reference()
