"""The worker's OpenAI API, driven by the official ``openai`` client over real HTTP."""

from __future__ import annotations

import base64
import struct

import httpx
import openai
import pytest
from _worker_fakes import FakeEngine

MESSAGES = [{"role": "user", "content": "say something"}]


def test_models_lists_the_one_model(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["fake-chat"]


def test_health_reports_load(chat_url: str) -> None:
    body = httpx.get(f"{chat_url}/health").json()
    assert body["status"] == "ok"
    assert body["model"] == "fake-chat"
    assert body["engine"] == "fake"
    assert body["active"] == 0
    assert body["waiting"] == 0
    assert body["busy_s"] >= 0


def test_chat_non_stream(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(model="fake-chat", messages=MESSAGES, max_tokens=5)
    assert out.id.startswith("chatcmpl-")
    assert out.object == "chat.completion"
    assert out.model == "fake-chat"
    assert out.created > 0
    choice = out.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "the quick brown fox jumps"
    assert choice.finish_reason == "length"
    assert out.usage is not None
    assert out.usage.prompt_tokens == 4  # "<user> say something <assistant>"
    assert out.usage.completion_tokens == 5
    assert out.usage.total_tokens == 9


def test_natural_stop_and_default_budget(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(model="fake-chat", messages=MESSAGES)
    assert out.choices[0].finish_reason == "stop"
    assert out.usage is not None and out.usage.completion_tokens == 12


def test_default_budget_is_the_rest_of_the_context(chat_url: str) -> None:
    engine = FakeEngine("fake-chat", context_length=9, eos_after=100)
    from _worker_fakes import serve

    from zhisuan.engines.worker import create_app

    app = create_app(lambda: engine, model_name="fake-chat", engine_kind="fake")
    with serve(app) as url, openai.OpenAI(base_url=f"{url}/v1", api_key="x") as c:
        out = c.chat.completions.create(model="fake-chat", messages=MESSAGES)
    assert out.usage is not None
    assert out.usage.completion_tokens == 9 - 4
    assert out.choices[0].finish_reason == "length"


def test_max_completion_tokens_wins(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(
        model="fake-chat", messages=MESSAGES, max_completion_tokens=2, max_tokens=8
    )
    assert out.choices[0].message.content == "the quick"
    assert out.choices[0].finish_reason == "length"


def test_stop_cuts_the_text(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(model="fake-chat", messages=MESSAGES, stop=[" fox"])
    assert out.choices[0].message.content == "the quick brown"
    assert out.choices[0].finish_reason == "stop"


def test_seed_and_temperature_reach_the_engine(client: openai.OpenAI) -> None:
    kwargs = {"model": "fake-chat", "messages": MESSAGES, "max_tokens": 1, "temperature": 0.7}
    assert client.chat.completions.create(**kwargs, seed=1).choices[0].message.content == "quick"
    greedy = client.chat.completions.create(**{**kwargs, "temperature": 0}, seed=1)
    assert greedy.choices[0].message.content == "the"


def test_text_completion(client: openai.OpenAI) -> None:
    out = client.completions.create(model="fake-chat", prompt="once upon", max_tokens=3)
    assert out.id.startswith("cmpl-")
    assert out.object == "text_completion"
    assert out.choices[0].text == "the quick brown"
    assert out.choices[0].finish_reason == "length"
    assert out.usage is not None and out.usage.prompt_tokens == 2


def test_text_completion_echo_and_default_16(client: openai.OpenAI) -> None:
    out = client.completions.create(model="fake-chat", prompt="once upon", echo=True)
    assert out.choices[0].text.startswith("once uponthe quick")
    assert out.usage is not None and out.usage.completion_tokens == 12


def test_embeddings_float_and_base64(embed_client: openai.OpenAI, embed_engine: FakeEngine) -> None:
    floats = embed_client.embeddings.create(model="fake-embed", input=["a b", "c"])
    assert [d.index for d in floats.data] == [0, 1]
    assert len(floats.data[0].embedding) == 8
    assert floats.usage.prompt_tokens == 3
    assert floats.usage.total_tokens == 3
    raw = httpx.post(
        f"{embed_client.base_url}embeddings",
        json={"model": "fake-embed", "input": "a b", "encoding_format": "base64"},
    ).json()
    packed = base64.b64decode(raw["data"][0]["embedding"])
    decoded = list(struct.unpack("<8f", packed))
    assert decoded == pytest.approx(floats.data[0].embedding, abs=1e-7)
    # the openai client asks for base64 by default and decodes it itself
    single = embed_client.embeddings.create(model="fake-embed", input="a b")
    assert single.data[0].embedding == pytest.approx(decoded)


def test_an_embedding_waits_in_the_line_of_the_tenant_the_gateway_names(
    embed_client: openai.OpenAI, embed_engine: FakeEngine
) -> None:
    embed_client.embeddings.create(
        model="fake-embed", input="a", extra_headers={"X-Zhisuan-Tenant": "team-a"}
    )
    embed_client.embeddings.create(model="fake-embed", input="b")  # sent directly: no tenant
    assert embed_engine.embed_tenants[-2:] == ["team-a", ""]


def test_embedding_dimensions_must_match(embed_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        embed_client.embeddings.create(model="fake-embed", input="a", dimensions=3)
    assert info.value.body["param"] == "dimensions"  # type: ignore[index]


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"temperature": 5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 2}, "n"),
    ],
)
def test_invalid_parameters_name_the_param(
    client: openai.OpenAI, kwargs: dict[str, object], param: str
) -> None:
    request = {"model": "fake-chat", "messages": MESSAGES, **kwargs}
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(**request)  # type: ignore[call-overload]
    assert info.value.status_code == 400
    body = info.value.body
    assert isinstance(body, dict)
    assert body["param"] == param
    assert body["type"] == "invalid_request_error"


def test_missing_field(chat_url: str) -> None:
    resp = httpx.post(f"{chat_url}/v1/chat/completions", json={"model": "fake-chat"})
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "messages"
    assert resp.json()["error"]["code"] == "missing_required_parameter"


def test_invalid_json(chat_url: str) -> None:
    resp = httpx.post(f"{chat_url}/v1/chat/completions", content=b"{not json")
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "invalid_json"


def test_context_length_exceeded(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="fake-chat", messages=MESSAGES, max_tokens=61)
    body = info.value.body
    assert isinstance(body, dict)
    assert body["code"] == "context_length_exceeded"
    assert "maximum context length is 64 tokens" in body["message"]
    assert "65 tokens" in body["message"]
    long_prompt = "word " * 70
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="fake-chat", prompt=long_prompt, max_tokens=None)
    assert info.value.body["param"] == "prompt"  # type: ignore[index]


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="fake-chatt", messages=MESSAGES)
    body = info.value.body
    assert isinstance(body, dict)
    assert body["code"] == "model_not_found"
    assert body["param"] == "model"


def test_wrong_task_is_400(client: openai.OpenAI, embed_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="fake-chat", input="hello")
    assert info.value.body["code"] == "unsupported_task"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        embed_client.chat.completions.create(model="fake-embed", messages=MESSAGES)
    with pytest.raises(openai.BadRequestError):
        embed_client.completions.create(model="fake-embed", prompt="x")


def test_unknown_route_has_an_openai_body(chat_url: str) -> None:
    resp = httpx.get(f"{chat_url}/v1/nothing")
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "not_found"


def test_engine_failure_is_503() -> None:
    from _worker_fakes import serve

    from zhisuan.engines.worker import create_app

    engine = FakeEngine("fake-chat", fail_after=0)
    app = create_app(lambda: engine, model_name="fake-chat", engine_kind="fake")
    with serve(app) as url:
        resp = httpx.post(
            f"{url}/v1/chat/completions", json={"model": "fake-chat", "messages": MESSAGES}
        )
        assert resp.status_code == 503
        assert resp.json()["error"]["code"] == "engine_unavailable"
        assert "exploded" not in resp.text  # internals stay in the log
        stream = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "fake-chat", "messages": MESSAGES, "stream": True},
        )
        assert stream.status_code == 503
        assert httpx.get(f"{url}/health").json()["active"] == 0
    assert engine.closed
