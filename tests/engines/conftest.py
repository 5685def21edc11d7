from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from _worker_fakes import FakeEngine, serve

from zhisuan.engines.worker import create_app


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
