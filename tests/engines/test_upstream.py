"""The ``upstream`` engine against a real OpenAI-compatible server: another worker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from _worker_fakes import FakeEngine, free_port, serve

from zhisuan.engines.upstream import UpstreamEngine, load, upstream_error
from zhisuan.engines.worker import PassThrough, create_app
from zhisuan.errors import EngineUnavailable, InvalidParameter, NotFound, RateLimited, UserError

MESSAGES = [{"role": "user", "content": "say something"}]


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    """The 'upstream': a fake-engine worker serving the model as ``backend-name``."""
    engine = FakeEngine("backend-name", context_length=64, eos_after=5)
    app = create_app(lambda: engine, model_name="backend-name", engine_kind="fake")
    with serve(app) as url:
        yield url


@pytest.fixture(scope="module")
def proxy_url(upstream_url: str) -> Iterator[str]:
    options = {"base_url": f"{upstream_url}/v1", "upstream_model": "backend-name"}

    def loader() -> UpstreamEngine:
        return load(None, model_name="public", device="cpu", options=options)

    with serve(create_app(loader, model_name="public", engine_kind="upstream")) as url:
        yield url


@pytest.fixture(scope="module")
def proxy(proxy_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{proxy_url}/v1", api_key="x", max_retries=0) as client:
        yield client


def test_is_a_pass_through() -> None:
    engine = load(
        None, model_name="m", device="cpu", options={"base_url": "http://x/v1", "check": False}
    )
    assert isinstance(engine, PassThrough)


def test_non_stream_renames_the_model(proxy: openai.OpenAI) -> None:
    out = proxy.chat.completions.create(model="public", messages=MESSAGES)
    assert out.model == "public"
    assert out.choices[0].message.content == "the quick brown fox jumps"
    assert out.usage is not None and out.usage.completion_tokens == 5
    text = proxy.completions.create(model="public", prompt="a b", max_tokens=2)
    assert text.model == "public" and text.choices[0].text == "the quick"


def test_stream_with_and_without_usage(proxy: openai.OpenAI, proxy_url: str) -> None:
    chunks = list(
        proxy.chat.completions.create(
            model="public", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert {c.model for c in chunks} == {"public"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "the quick brown fox jumps"
    )
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 4 + 5
    body = {"model": "public", "messages": MESSAGES, "stream": True}
    plain = [
        line[6:]
        for line in httpx.post(f"{proxy_url}/v1/chat/completions", json=body).iter_lines()
        if line.startswith("data: ")
    ]
    assert plain[-1] == "[DONE]"
    assert all(json.loads(e)["choices"] and "usage" not in json.loads(e) for e in plain[:-1])
    metered = [
        line[6:]
        for line in httpx.post(
            f"{proxy_url}/v1/chat/completions", json=body, headers={"X-Zhisuan-Usage": "always"}
        ).iter_lines()
        if line.startswith("data: ")
    ]
    assert json.loads(metered[-2])["usage"]["completion_tokens"] == 5


def test_upstream_4xx_passes_through(proxy: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        proxy.chat.completions.create(model="public", messages=MESSAGES, max_tokens=200)
    assert info.value.body["code"] == "context_length_exceeded"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as info:
        proxy.chat.completions.create(
            model="public", messages=MESSAGES, max_tokens=200, stream=True
        )
    assert info.value.body["code"] == "context_length_exceeded"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as info:
        proxy.embeddings.create(model="public", input="hi")
    assert info.value.body["code"] == "unsupported_task"  # type: ignore[index]


def test_validation_and_model_name_are_checked_locally(proxy: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        proxy.chat.completions.create(model="public", messages=MESSAGES, temperature=9)
    assert info.value.body["param"] == "temperature"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        proxy.chat.completions.create(model="backend-name", messages=MESSAGES)


def test_unreachable_upstream_is_503() -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(EngineUnavailable):
        load(None, model_name="m", device="cpu", options={"base_url": dead})
    options = {"base_url": dead, "check": False}
    app = create_app(
        lambda: load(None, model_name="m", device="cpu", options=options),
        model_name="m",
        engine_kind="upstream",
    )
    with serve(app) as url:
        body = {"model": "m", "messages": MESSAGES}
        assert httpx.post(f"{url}/v1/chat/completions", json=body).status_code == 503
        stream = httpx.post(f"{url}/v1/chat/completions", json={**body, "stream": True})
        assert stream.status_code == 503
        assert stream.json()["error"]["code"] == "engine_unavailable"
        assert httpx.get(f"{url}/health").json()["active"] == 0


def test_options_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidParameter, match="base_url"):
        load(None, model_name="m", device="cpu", options={})
    monkeypatch.delenv("ZHISUAN_TEST_UPSTREAM_KEY", raising=False)
    options = {"base_url": "http://x/v1", "api_key_env": "ZHISUAN_TEST_UPSTREAM_KEY"}
    with pytest.raises(InvalidParameter, match="ZHISUAN_TEST_UPSTREAM_KEY"):
        load(None, model_name="m", device="cpu", options=options)


def test_key_is_sent_and_usage_estimated(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = {"model": "up", "choices": [{"message": {"content": "12345678"}}]}
        return httpx.Response(200, json=answer)

    monkeypatch.setenv("ZHISUAN_TEST_UPSTREAM_KEY", "sk-secret")
    options = {
        "base_url": "http://up.example/v1",
        "api_key_env": "ZHISUAN_TEST_UPSTREAM_KEY",
        "check": False,
    }
    engine = load(None, model_name="public", device="cpu", options=options)
    engine._client = httpx.AsyncClient(
        base_url=engine.base_url,
        headers=engine._client.headers,
        transport=httpx.MockTransport(handler),
    )

    async def call() -> dict[str, object]:
        body = {"model": "public", "messages": []}
        try:
            return await engine.forward_json("/chat/completions", body)
        finally:
            await engine.close()

    out: dict[str, Any] = asyncio.run(call())
    assert seen[0].headers["authorization"] == "Bearer sk-secret"
    assert json.loads(seen[0].content)["model"] == "public"
    assert out["model"] == "public"
    assert out["usage"]["completion_tokens"] == 2


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, UserError),
        (404, NotFound),
        (429, RateLimited),
        (401, EngineUnavailable),
        (500, EngineUnavailable),
    ],
)
def test_error_mapping(status: int, kind: type[Exception]) -> None:
    body = {"error": {"message": "nope", "param": "top_k", "code": "bad", "type": "x"}}
    err = upstream_error(httpx.Response(status, json=body, headers={"retry-after": "7"}))
    assert isinstance(err, kind)
    if status == 400:
        assert err.to_body()["error"] == {
            "message": "nope",
            "type": "invalid_request_error",
            "param": "top_k",
            "code": "bad",
        }


def test_usage_is_estimated_when_the_upstream_sends_none(upstream_url: str) -> None:
    options = {"base_url": f"{upstream_url}/v1", "upstream_model": "backend-name"}
    options["stream_usage"] = False  # type: ignore[assignment]

    def loader() -> UpstreamEngine:
        return load(None, model_name="public", device="cpu", options=options)

    with (
        serve(create_app(loader, model_name="public", engine_kind="upstream")) as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client,
    ):
        chunks = list(
            client.chat.completions.create(
                model="public",
                messages=MESSAGES,  # type: ignore[arg-type]
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert usage.completion_tokens == 5  # one per content chunk
    assert usage.prompt_tokens > 0
