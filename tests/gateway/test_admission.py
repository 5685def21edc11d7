"""Worst-case token bounds and parameter names in validation errors."""

from __future__ import annotations

import json
from typing import Any

from zhisuan.engines.options import UNKNOWN_CONTEXT_COMPLETION
from zhisuan.gateway._admission import worst_case_tokens
from zhisuan.gateway._errors import param_of
from zhisuan.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest


def _parsed(model: type[Any], body: dict[str, Any]) -> tuple[Any, int]:
    return model.model_validate(body), len(json.dumps(body).encode())


def test_chat_bound_covers_the_body_and_template() -> None:
    req, size = _parsed(
        ChatCompletionRequest,
        {"model": "m", "messages": [{"role": "user", "content": "héllo"}], "max_tokens": 10},
    )
    prompt, completion = worst_case_tokens(req, size, context_length=512)
    assert prompt >= size > len("héllo".encode())
    assert completion == 10


def test_what_else_a_template_renders_is_covered() -> None:
    tools = [{"type": "function", "function": {"name": "f" * 300, "parameters": {}}}]
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    bare, bare_size = _parsed(ChatCompletionRequest, body)
    req, size = _parsed(ChatCompletionRequest, {**body, "tools": tools})  # for an upstream
    assert (
        worst_case_tokens(req, size, None)[0] >= worst_case_tokens(bare, bare_size, None)[0] + 300
    )


def test_without_max_tokens_the_rest_of_the_context_is_reserved() -> None:
    # a chat completion: a text completion without ``max_tokens`` (or null) has OpenAI's 16
    req, size = _parsed(
        ChatCompletionRequest, {"model": "m", "messages": [{"role": "user", "content": "abc"}]}
    )
    prompt, completion = worst_case_tokens(req, size, context_length=100)
    assert prompt + completion == 100


def test_a_prompt_scored_with_no_completion_reserves_none() -> None:
    # ``echo`` with ``max_tokens: 0``: the prompt's log-probabilities and nothing generated
    body = {"model": "m", "prompt": "abc", "echo": True, "logprobs": 1, "max_tokens": 0}
    req, size = _parsed(CompletionRequest, body)
    assert worst_case_tokens(req, size, context_length=100)[1] == 0
    assert worst_case_tokens(req, size, context_length=None)[1] == 0


def test_embeddings_reserve_no_completion() -> None:
    req, size = _parsed(EmbeddingRequest, {"model": "m", "input": ["a", "bb"]})
    assert worst_case_tokens(req, size, 512)[1] == 0


def test_param_names() -> None:
    assert param_of(("body", "temperature")) == "temperature"
    assert param_of(("body", "messages", 0, "role")) == "messages[0].role"


def test_an_unknown_context_caps_nothing() -> None:
    text = "x" * 9000
    req, size = _parsed(
        ChatCompletionRequest,
        {"model": "m", "messages": [{"role": "user", "content": text}], "max_tokens": 20000},
    )
    prompt, completion = worst_case_tokens(req, size, context_length=None)  # an upstream's
    assert prompt >= 9000 and completion == 20000
    bare, size = _parsed(
        ChatCompletionRequest, {"model": "m", "messages": [{"role": "user", "content": "abc"}]}
    )
    assert worst_case_tokens(bare, size, None)[1] == UNKNOWN_CONTEXT_COMPLETION
    text, size = _parsed(CompletionRequest, {"model": "m", "prompt": "abc", "max_tokens": None})
    assert worst_case_tokens(text, size, None)[1] == 16  # OpenAI's default, null or not
