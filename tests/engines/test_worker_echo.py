"""A text completion's ``echo`` with ``logprobs`` through a worker, driven by the ``openai``
client: the prompt's tokens first in the choice's ``logprobs`` (``null`` for the first),
then the completion's, whole and streamed (the echo's chunk carries the prompt's); the
values checked token for token against a plain forward pass over the prompt
(``_reference_logprobs``). ``max_tokens: 0`` only with ``echo``: the prompt scored (or only
echoed), ``finish_reason`` ``"length"``, no completion token. An engine that does not score
prompts keeps OpenAI's refusal.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from _logprobs_answers import echoed_prompt, text_completion_entries
from _reference_logprobs import (
    assert_matches,
    log_softmax_after,
    log_softmax_of_prompt,
    prompt_ids,
    vocabulary_bytes,
)
from _worker_fakes import FakeEngine, serve

from zhisuan.demo import tiny_chat_dir
from zhisuan.engines.worker import create_app, load_engine
from zhisuan.engines.worker._registry import AnyEngine

PROMPT = "Once upon a time, 你好"
ECHO_REFUSED = "Setting 'echo' and 'logprobs' at the same time is not supported for this model."
ZERO_REFUSED = "Invalid value for 'max_tokens': Input should be greater than or equal to 1."


@pytest.fixture(scope="module")
def ids_of(hf: tuple[Any, Any]) -> dict[bytes, int]:
    return {raw: i for i, raw in vocabulary_bytes(hf[0]).items()}


@pytest.fixture(scope="module")
def demo(hf: tuple[Any, Any]) -> Iterator[openai.OpenAI]:
    def loader() -> AnyEngine:
        path = tiny_chat_dir()
        return load_engine("transformers", path, model_name="tiny", device="cpu", options={})

    with (
        serve(create_app(loader, model_name="tiny", engine_kind="transformers")) as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=60) as client,
    ):
        yield client


def whole_and_streamed(client: openai.OpenAI, **kw: Any) -> tuple[Any, list[Any], Any]:
    """The answer, its stream's choices and the stream's usage."""
    args = {"model": "tiny", "prompt": PROMPT, "echo": True, "temperature": 0, **kw}
    answer = client.completions.create(**args)
    chunks = list(
        client.completions.create(**args, stream=True, stream_options={"include_usage": True})
    )
    return answer, [c.choices[0] for c in chunks if c.choices], chunks[-1].usage


def check_prompt(lp: Any, n: int, k: int, hf: tuple[Any, Any], ids_of: dict[bytes, int]) -> None:
    """The first ``n`` positions of ``lp``: the prompt's tokens, the model's values."""
    first, entries = echoed_prompt(lp, PROMPT, n, k, ids_of)
    ids = prompt_ids(hf[0], PROMPT)
    assert [first, *(token for token, _, _ in entries)] == ids and lp.tokens[0] == "<|bos|>"
    assert_matches(entries, log_softmax_of_prompt(hf[1], ids), k, greedy=False)


@pytest.mark.parametrize("k", [0, 2])
def test_the_prompt_alone_scored(
    demo: openai.OpenAI, hf: tuple[Any, Any], ids_of: dict[bytes, int], k: int
) -> None:
    answer, chunks, usage = whole_and_streamed(demo, logprobs=k, max_tokens=0)
    choice = answer.choices[0]
    assert (choice.text, choice.finish_reason) == (PROMPT, "length")
    assert answer.usage is not None and answer.usage.completion_tokens == 0
    n = answer.usage.prompt_tokens
    assert n == len(prompt_ids(hf[0], PROMPT)) and len(choice.logprobs.tokens) == n
    check_prompt(choice.logprobs, n, k, hf, ids_of)
    # the stream: the echo's chunk with the prompt's, then the finish
    echo, finish = chunks
    assert (echo.text, echo.finish_reason) == (PROMPT, None)
    assert (finish.text, finish.logprobs, finish.finish_reason) == ("", None, "length")
    assert echo.logprobs.tokens == choice.logprobs.tokens
    assert echo.logprobs.text_offset == choice.logprobs.text_offset
    check_prompt(echo.logprobs, n, k, hf, ids_of)
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (n, 0)


def test_the_prompt_then_the_completion(
    demo: openai.OpenAI, hf: tuple[Any, Any], ids_of: dict[bytes, int]
) -> None:
    answer, chunks, _ = whole_and_streamed(demo, logprobs=3, max_tokens=6)
    choice, lp = answer.choices[0], answer.choices[0].logprobs
    assert answer.usage is not None and 2 <= answer.usage.completion_tokens <= 6
    n = answer.usage.prompt_tokens
    assert choice.text.startswith(PROMPT) and len(lp.tokens) > n + 1
    check_prompt(lp, n, 3, hf, ids_of)
    completion = dataclasses.make_dataclass("Choice", ["text", "logprobs", "finish_reason"])
    tail = completion(choice.text[len(PROMPT) :], _tail(lp, n), choice.finish_reason)
    entries = text_completion_entries([tail], PROMPT, 3, ids_of, stream=False)
    ids = prompt_ids(hf[0], PROMPT)
    assert_matches(
        entries, log_softmax_after(hf[1], ids, [t for t, _, _ in entries]), 3, greedy=True
    )
    # the stream: the echo's chunk carries the prompt's, the others the completion's
    assert chunks[0].text == PROMPT and chunks[0].logprobs.tokens == lp.tokens[:n]
    streamed = [t for c in chunks[1:] if c.logprobs for t in c.logprobs.tokens]
    assert streamed == lp.tokens[n:]
    assert "".join(c.text for c in chunks) == choice.text


def _tail(lp: Any, n: int) -> Any:
    return type(lp)(
        tokens=lp.tokens[n:],
        token_logprobs=lp.token_logprobs[n:],
        top_logprobs=lp.top_logprobs[n:],
        text_offset=lp.text_offset[n:],
    )


@pytest.mark.parametrize("stream", [False, True])
def test_echo_with_no_token_and_no_score_needs_no_engine(
    chat_url: str, chat_engine: FakeEngine, stream: bool
) -> None:
    body = {"model": "fake-chat", "prompt": "a b c", "echo": True, "max_tokens": 0}
    started = len(chat_engine.started)
    if stream:
        body["stream_options"] = {"include_usage": True}
        with httpx.stream("POST", f"{chat_url}/v1/completions", json={**body, "stream": True}) as r:
            events = [line[6:] for line in r.iter_lines() if line.startswith("data: {")]
        texts = [e for e in events if '"text":"a b c"' in e]
        assert len(texts) == 1 and '"logprobs":null' in texts[0]
        assert '"finish_reason":"length"' in events[-2] and '"completion_tokens":0' in events[-1]
    else:
        answer = httpx.post(f"{chat_url}/v1/completions", json=body).json()
        assert answer["choices"][0]["text"] == "a b c"
        assert answer["choices"][0]["logprobs"] is None
        assert answer["choices"][0]["finish_reason"] == "length"
        assert answer["usage"] == {"prompt_tokens": 3, "completion_tokens": 0, "total_tokens": 3}
    assert len(chat_engine.started) == started  # nothing was generated


def test_max_tokens_zero_without_echo_is_refused(demo: openai.OpenAI) -> None:
    for echo in ({}, {"echo": False}, {"echo": None}):
        with pytest.raises(openai.BadRequestError) as info:
            demo.completions.create(model="tiny", prompt=PROMPT, max_tokens=0, **echo)
        assert info.value.body == {
            "message": ZERO_REFUSED,
            "type": "invalid_request_error",
            "param": "max_tokens",
            "code": "invalid_parameter",
        }


def test_an_engine_that_does_not_score_prompts_refuses(chat_engine: FakeEngine) -> None:
    """One that returns the completion's log-probabilities but does not score a prompt."""
    engine = FakeEngine("fake-chat")
    engine.info = dataclasses.replace(chat_engine.info, logprobs=True)
    with serve(create_app(lambda: engine, model_name="fake-chat", engine_kind="fake")) as url:
        for max_tokens in (0, 4):
            for stream in (False, True):
                body = {"model": "fake-chat", "prompt": "a b", "echo": True, "logprobs": 1}
                body |= {"max_tokens": max_tokens, "stream": stream}
                resp = httpx.post(f"{url}/v1/completions", json=body)
                assert resp.status_code == 400
                error = resp.json()["error"]
                assert (error["message"], error["param"]) == (ECHO_REFUSED, "echo")
    assert engine.started == []
