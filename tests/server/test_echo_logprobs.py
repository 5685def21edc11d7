"""A prompt scored through a real ``zhisuan serve --demo`` (the gateway, then the worker),
driven by the ``openai`` client as an evaluation harness asks: ``echo`` with ``logprobs``
and ``max_tokens: 0``, whole and streamed, checked token for token against a plain forward
pass over the prompt; metered as what it is, the prompt's tokens and no completion token.
The llama.cpp deployment, which does not score prompts, refuses in OpenAI's words, and
echoes a prompt without scoring it."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.engines._logprobs_answers import echoed_prompt
from tests.engines._reference_logprobs import (
    assert_matches,
    demo_reference,
    log_softmax_of_prompt,
    prompt_ids,
    vocabulary_bytes,
)
from tests.server._serve import Server

pytestmark = pytest.mark.server

CHAT = "zhisuan-tiny-chat"
GGUF = "zhisuan-tiny-chat-gguf"
PROMPT = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def hf() -> tuple[Any, Any]:
    return demo_reference()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_harness_scores_a_prompt(
    server: Server, client: openai.OpenAI, hf: tuple[Any, Any], stream: bool
) -> None:
    args: dict[str, Any] = {"model": CHAT, "prompt": PROMPT, "echo": True, "logprobs": 2}
    if stream:
        raw = client.completions.with_raw_response.create(**args, max_tokens=0, stream=True)
        chunks = list(raw.parse())
        assert [c.choices[0].finish_reason for c in chunks] == [None, "length"]
        choice = chunks[0].choices[0]
    else:
        raw = client.completions.with_raw_response.create(**args, max_tokens=0)
        answer = raw.parse()
        choice = answer.choices[0]
        assert choice.finish_reason == "length"
        assert answer.usage is not None and answer.usage.completion_tokens == 0
    assert choice.text == PROMPT and choice.logprobs is not None
    ids = prompt_ids(hf[0], PROMPT)
    ids_of = {raw: i for i, raw in vocabulary_bytes(hf[0]).items()}
    first, entries = echoed_prompt(choice.logprobs, PROMPT, len(ids), 2, ids_of)
    assert [first, *(token for token, _, _ in entries)] == ids
    assert_matches(entries, log_softmax_of_prompt(hf[1], ids), 2, greedy=False)
    # metered as what it used: the prompt, and no completion token
    request_id = raw.headers["x-request-id"]
    rows = json.loads(server.cli("usage", "--json").stdout)
    (row,) = [r for r in rows if r.get("request_id") == request_id]
    assert (row["status"], row["prompt_tokens"], row["completion_tokens"]) == ("ok", len(ids), 0)


def test_the_llamacpp_deployment_echoes_but_does_not_score(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=GGUF, prompt=PROMPT, echo=True, logprobs=2, max_tokens=0)
    assert info.value.body == {
        "message": "Setting 'echo' and 'logprobs' at the same time is not supported for this "
        "model.",
        "type": "invalid_request_error",
        "param": "echo",
        "code": "invalid_parameter",
    }
    answer = client.completions.create(model=GGUF, prompt=PROMPT, echo=True, max_tokens=0)
    assert answer.choices[0].text == PROMPT and answer.choices[0].logprobs is None
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None and answer.usage.completion_tokens == 0
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=GGUF, prompt=PROMPT, max_tokens=0)
    assert info.value.body["param"] == "max_tokens"  # type: ignore[index]
