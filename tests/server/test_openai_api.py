"""The OpenAI API of a real ``zhisuan serve --demo``, driven by the official client."""

from __future__ import annotations

import base64
import struct

import httpx
import openai
import pytest

from tests.server._serve import Server

pytestmark = pytest.mark.server

CHAT = "zhisuan-tiny-chat"
EMBED = "minilm-embed"
HELLO = [{"role": "user", "content": "Hello!"}]


def test_models_lists_the_demo_models(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {CHAT, EMBED} <= ids


def test_chat_completion_has_text_and_usage(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(model=CHAT, messages=HELLO, max_tokens=24, temperature=0)
    choice = resp.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert resp.usage is not None
    assert resp.usage.prompt_tokens > 0
    assert 0 < resp.usage.completion_tokens <= 24
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    assert resp.model == CHAT


def test_chat_stream_matches_non_stream_and_reports_usage(client: openai.OpenAI) -> None:
    full = client.chat.completions.create(model=CHAT, messages=HELLO, max_tokens=24, temperature=0)
    chunks = list(
        client.chat.completions.create(
            model=CHAT,
            messages=HELLO,
            max_tokens=24,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens  # type: ignore[union-attr]


def test_stream_without_include_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(model=CHAT, messages=HELLO, max_tokens=8, stream=True)
    )
    assert chunks
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)


def test_max_completion_tokens_limits_the_answer(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": "Tell me about GPUs and tokens."}],
        max_completion_tokens=3,
        temperature=0,
    )
    assert resp.usage is not None and resp.usage.completion_tokens <= 3
    assert resp.choices[0].finish_reason in ("length", "stop")


def test_stop_sequence_ends_the_answer_without_it(client: openai.OpenAI) -> None:
    base = (
        client.completions.create(model=CHAT, prompt="The GPU", max_tokens=20, temperature=0)
        .choices[0]
        .text
    )
    assert len(base) > 2
    stop = base.strip()[1:3] if len(base.strip()) > 3 else base[:1]
    resp = client.completions.create(
        model=CHAT, prompt="The GPU", max_tokens=20, temperature=0, stop=[stop]
    )
    assert stop not in resp.choices[0].text
    assert resp.choices[0].finish_reason == "stop"
    assert base.startswith(resp.choices[0].text)


def test_seed_makes_sampling_repeatable(client: openai.OpenAI) -> None:
    def sample() -> str:
        resp = client.chat.completions.create(
            model=CHAT, messages=HELLO, max_tokens=16, temperature=1.0, top_p=0.9, seed=1234
        )
        return resp.choices[0].message.content or ""

    assert sample() == sample()


def test_text_completion(client: openai.OpenAI) -> None:
    resp = client.completions.create(model=CHAT, prompt="A token is", max_tokens=10, temperature=0)
    assert resp.object == "text_completion"
    assert resp.choices[0].text
    assert resp.usage is not None and resp.usage.completion_tokens > 0


def test_text_completion_stream(client: openai.OpenAI) -> None:
    chunks = list(
        client.completions.create(
            model=CHAT, prompt="A token is", max_tokens=10, temperature=0, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices)


def test_embeddings_float_and_base64_agree(client: openai.OpenAI) -> None:
    texts = ["GPUs serve models.", "Accelerators run models.", "I like green apples."]
    floats = client.embeddings.create(model=EMBED, input=texts)
    assert len(floats.data) == 3
    assert len(floats.data[0].embedding) == 384
    assert floats.usage.prompt_tokens > 0
    raw = httpx.post(
        f"{client.base_url}embeddings",
        json={"model": EMBED, "input": texts[0], "encoding_format": "base64"},
        timeout=30,
    ).json()
    blob = base64.b64decode(raw["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(blob) // 4}f", blob)
    assert decoded == pytest.approx(floats.data[0].embedding, abs=1e-6)

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    e = [d.embedding for d in floats.data]
    assert cos(e[0], e[1]) > cos(e[0], e[2])


def test_single_string_embedding(client: openai.OpenAI) -> None:
    resp = client.embeddings.create(model=EMBED, input="hello")
    assert len(resp.data) == 1


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="no-such-model", messages=HELLO)
    assert info.value.code == "model_not_found"


def test_invalid_parameter_is_400_naming_it(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=CHAT, messages=HELLO, temperature=5)
    body = info.value.body
    assert isinstance(body, dict)
    assert body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=CHAT, messages=[])
    assert isinstance(info.value.body, dict) and info.value.body["param"] == "messages"


def test_prompt_over_context_is_400_stating_the_limit(client: openai.OpenAI) -> None:
    long = "tokens and GPUs " * 2000
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": long}])
    assert info.value.code == "context_length_exceeded"
    assert "maximum context length is" in str(info.value)


def test_embedding_on_chat_model_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=CHAT, input="x")


def test_health_and_ready(server: Server) -> None:
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
    # started on loopback without --auth: auth is off, and the gateway says so
    log = server.log.read_text()
    assert "warning: auth is off" in log
    # at the default log level (as `make run`): a line per replica, none per readiness poll
    assert f"replica {CHAT}#0: ready" in log
    assert "HTTP Request: GET" not in log
    ready = httpx.get(f"{server.url}/ready")
    assert ready.status_code == 200
    assert ready.json()["models"][CHAT]["ready"] >= 1


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversized_body_is_413(server: Server, chunked: bool) -> None:
    body = b"x" * (5 * 1024 * 1024)
    resp = httpx.post(
        f"{server.url}/v1/chat/completions",
        content=iter([body[:65536], body[65536:]]) if chunked else body,
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "payload_too_large"


def test_malformed_json_is_400(server: Server) -> None:
    resp = httpx.post(
        f"{server.url}/v1/chat/completions",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == 400
    assert resp.json()["error"]["type"] == "invalid_request_error"
