"""Log-probabilities end to end: a real ``zhisuan serve --demo`` driven by the ``openai``
client, the values checked token for token against a plain forward pass of the same demo
model computed here with torch (``log_softmax`` of its logits, before temperature, top_p and
penalties), greedy and sampled, whole and streamed, and the llama.cpp deployment's against a
second ``Llama`` on its GGUF that keeps every position's logits; the refusals
(``top_logprobs`` without ``logprobs``, ``echo`` with ``logprobs`` of the llama.cpp
deployment, which does not score prompts) go through the gateway;
a request without ``logprobs`` still gets ``null``."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.engines import _reference_llamacpp as llama_ref
from tests.engines._logprobs_answers import (
    Entry,
    chat_entries,
    text_completion_entries,
    text_token_bytes,
)
from tests.engines._reference_logprobs import (
    assert_matches,
    demo_reference,
    log_softmax_after,
    prompt_ids,
    vocabulary_bytes,
)
from tests.server._serve import Server
from zhisuan.demo import tiny_chat_gguf

pytestmark = pytest.mark.server

CHAT = "zhisuan-tiny-chat"
GGUF = "zhisuan-tiny-chat-gguf"
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Count from 1 to 10."}]
PROMPT = "Once upon a time"
SAMPLING: list[Any] = [
    pytest.param({"temperature": 0}, id="greedy"),
    pytest.param(
        {"temperature": 1.2, "top_p": 0.9, "seed": 7, "presence_penalty": 0.5}, id="sampled"
    ),
]


@pytest.fixture(scope="module")
def hf() -> tuple[Any, Any]:
    return demo_reference()


@pytest.fixture(scope="module")
def ids_of(hf: tuple[Any, Any]) -> dict[bytes, int]:
    """Token bytes to token id, over the demo model's whole vocabulary."""
    table = {raw: i for i, raw in vocabulary_bytes(hf[0]).items()}
    assert len(table) == len(hf[0])
    return table


def _chat_entries(items: list[Any], ids_of: dict[bytes, int]) -> list[Entry]:
    for item in items:
        assert item.bytes is not None and bytes(item.bytes).decode() == item.token
    return chat_entries(items, ids_of)


def _chat_reference(hf: tuple[Any, Any], entries: list[Entry], prompt_tokens: int) -> Any:
    tokenizer, model = hf
    rendered = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    prompt = prompt_ids(tokenizer, rendered)
    assert len(prompt) == prompt_tokens  # the prompt the engine saw
    return log_softmax_after(model, prompt, [token for token, _, _ in entries])


@pytest.mark.parametrize("sampling", SAMPLING)
@pytest.mark.parametrize("top", [0, 5])
def test_chat_logprobs_are_the_models(
    client: openai.OpenAI,
    hf: tuple[Any, Any],
    ids_of: dict[bytes, int],
    sampling: dict[str, Any],
    top: int,
) -> None:
    answer = client.chat.completions.create(
        model=CHAT, messages=MESSAGES, max_tokens=20, logprobs=True, top_logprobs=top, **sampling
    )
    choice = answer.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    assert choice.logprobs.refusal is None
    entries = _chat_entries(choice.logprobs.content, ids_of)
    assert answer.usage is not None
    ref = _chat_reference(hf, entries, answer.usage.prompt_tokens)
    assert_matches(entries, ref, top, greedy=sampling["temperature"] == 0)
    assert "".join(i.token for i in choice.logprobs.content) == choice.message.content

    stream = client.chat.completions.create(
        model=CHAT,
        messages=MESSAGES,
        max_tokens=20,
        logprobs=True,
        top_logprobs=top,
        stream=True,
        stream_options={"include_usage": True},
        **sampling,
    )
    items: list[Any] = []
    text = ""
    usage = None
    for chunk in stream:
        usage = chunk.usage or usage
        if not chunk.choices:
            continue
        delta, logprobs = chunk.choices[0].delta, chunk.choices[0].logprobs
        if logprobs is None:  # the role's chunk and the finish's
            assert not delta.content
            continue
        assert logprobs.content is not None
        assert "".join(i.token for i in logprobs.content) == delta.content
        items.extend(logprobs.content)
        text += delta.content or ""
    assert text == choice.message.content  # the seed repeats the sampled answer
    streamed = _chat_entries(items, ids_of)
    assert usage is not None
    assert_matches(streamed, _chat_reference(hf, streamed, usage.prompt_tokens), top, greedy=False)


@pytest.mark.parametrize("sampling", SAMPLING)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_text_completion_logprobs_are_the_models(
    client: openai.OpenAI,
    hf: tuple[Any, Any],
    ids_of: dict[bytes, int],
    sampling: dict[str, Any],
    stream: bool,
) -> None:
    k = 3
    args: dict[str, Any] = {"model": CHAT, "prompt": PROMPT, "max_tokens": 12, "logprobs": k}
    if stream:
        choices = [c.choices[0] for c in client.completions.create(**args, **sampling, stream=True)]
    else:
        choices = client.completions.create(**args, **sampling).choices
    entries = text_completion_entries(choices, PROMPT, k, ids_of, stream=stream)
    ids = [t for t, _, _ in entries]
    tokenizer, model = hf
    ref = log_softmax_after(model, prompt_ids(tokenizer, PROMPT), ids)
    assert_matches(entries, ref, k, greedy=sampling["temperature"] == 0)


def test_the_refusals_go_through_the_gateway(server: Server, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=CHAT, messages=MESSAGES, top_logprobs=2)
    assert info.value.body == {
        "message": "The 'top_logprobs' parameter is only allowed when 'logprobs' is enabled.",
        "type": "invalid_request_error",
        "param": "top_logprobs",
        "code": None,  # OpenAI's
    }
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=CHAT, messages=MESSAGES, logprobs=True, top_logprobs=21
        )
    assert info.value.body["param"] == "top_logprobs"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as info:  # llama.cpp does not score prompts
        client.completions.create(model=GGUF, prompt=PROMPT, logprobs=1, echo=True)
    assert info.value.body["message"] == (  # type: ignore[index]
        "Setting 'echo' and 'logprobs' at the same time is not supported for this model."
    )


@pytest.fixture(scope="module")
def gguf_ref() -> Any:
    pytest.importorskip("llama_cpp")
    path = tiny_chat_gguf()
    if not path.is_file():
        pytest.skip("the demo GGUF is not built")
    return llama_ref.reference_llama(path)


@pytest.mark.parametrize("sampling", SAMPLING)
def test_the_llamacpp_deployments_are_the_models(
    client: openai.OpenAI, hf: tuple[Any, Any], gguf_ref: Any, sampling: dict[str, Any]
) -> None:
    """Chat whole and streamed, a text completion: the GGUF's own values (the demo GGUF is
    the demo model's export: the same chat template renders its prompt)."""
    top = 4
    kw: dict[str, Any] = {"model": GGUF, "messages": MESSAGES, "max_tokens": 20, **sampling}
    answer = client.chat.completions.create(logprobs=True, top_logprobs=top, **kw)
    choice = answer.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    ids_of = llama_ref.vocabulary_ids(gguf_ref)
    entries = _chat_entries(choice.logprobs.content, ids_of)
    rendered = hf[0].apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    prompt = llama_ref.prompt_ids(gguf_ref, rendered)
    assert answer.usage is not None and answer.usage.prompt_tokens == len(prompt)
    ref = llama_ref.log_softmax_after(gguf_ref, prompt, [t for t, _, _ in entries])
    greedy = sampling["temperature"] == 0
    llama_ref.assert_matches(entries, ref, top, greedy=greedy)
    items: list[Any] = []
    for chunk in client.chat.completions.create(logprobs=True, top_logprobs=top, stream=True, **kw):
        if chunk.choices and chunk.choices[0].logprobs is not None:
            items.extend(chunk.choices[0].logprobs.content or [])
    streamed = _chat_entries(items, ids_of)
    assert [t for t, _, _ in streamed] == [t for t, _, _ in entries]
    llama_ref.assert_matches(streamed, ref, top, greedy=greedy)
    text = client.completions.create(
        model=GGUF, prompt=PROMPT, max_tokens=8, logprobs=2, **sampling
    ).choices[0]
    assert text.logprobs is not None and text.logprobs.tokens and text.logprobs.token_logprobs
    ids = [ids_of[text_token_bytes(t)] for t in text.logprobs.tokens]
    rows = llama_ref.log_softmax_after(gguf_ref, llama_ref.prompt_ids(gguf_ref, PROMPT), ids)
    for pos, (token, value) in enumerate(zip(ids, text.logprobs.token_logprobs, strict=True)):
        assert abs(value - rows[pos][token]) < llama_ref.TOLERANCE, pos


@pytest.mark.parametrize("model", [CHAT, GGUF])
def test_requests_without_logprobs_still_get_null(server: Server, model: str) -> None:
    for path, fields in [
        ("chat/completions", {"messages": MESSAGES}),
        ("chat/completions", {"messages": MESSAGES, "logprobs": False}),
        ("completions", {"prompt": PROMPT}),
        ("completions", {"prompt": PROMPT, "logprobs": None}),
    ]:
        body = {"model": model, "max_tokens": 3, **fields}
        answer = httpx.post(f"{server.url}/v1/{path}", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["logprobs"] is None
        body["stream"] = True
        with httpx.stream("POST", f"{server.url}/v1/{path}", json=body, timeout=60) as resp:
            text = "".join(resp.iter_text())
        assert resp.status_code == 200
        assert '"logprobs":null' in text and '"logprobs":{' not in text
