"""``max_tokens`` as OpenAI defaults it: a text completion (``/v1/completions``) without one,
or with ``null``, gets 16 tokens; a chat completion without one (or with ``null``) states no
budget, and may use the rest of the context. Both ways the models validate are covered: the
gateway's (the raw JSON bytes) and the worker's (the decoded dict)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel

from zhisuan.engines.options import UNKNOWN_CONTEXT_COMPLETION
from zhisuan.gateway._admission import worst_case_tokens
from zhisuan.protocol import ChatCompletionRequest, CompletionRequest

CHAT: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
TEXT: dict[str, Any] = {"model": "m", "prompt": "once upon"}
HOW = pytest.mark.parametrize("how", ["gateway", "worker"])


def _validate(model: type[BaseModel], body: dict[str, Any], how: str) -> Any:
    if how == "gateway":
        return model.model_validate_json(json.dumps(body))
    return model.model_validate(json.loads(json.dumps(body)))


@HOW
@pytest.mark.parametrize("fields", [{}, {"max_tokens": None}], ids=["absent", "null"])
def test_a_text_completion_without_max_tokens_or_with_null_gets_16(
    how: str, fields: dict[str, Any]
) -> None:
    req = _validate(CompletionRequest, {**TEXT, **fields}, how)
    assert req.max_tokens == 16
    # and the gateway reserves those 16, with a context or without one
    size = len(json.dumps({**TEXT, **fields}))
    assert worst_case_tokens(req, size, context_length=1000)[1] == 16
    assert worst_case_tokens(req, size, context_length=None)[1] == 16


@HOW
def test_a_text_completions_own_max_tokens_is_kept(how: str) -> None:
    assert _validate(CompletionRequest, {**TEXT, "max_tokens": 300}, how).max_tokens == 300


@HOW
@pytest.mark.parametrize("fields", [{}, {"max_tokens": None}], ids=["absent", "null"])
def test_a_chat_completion_without_max_tokens_or_with_null_states_no_budget(
    how: str, fields: dict[str, Any]
) -> None:
    req = _validate(ChatCompletionRequest, {**CHAT, **fields}, how)
    assert req.max_tokens is None and req.requested_max_tokens() is None
    size = len(json.dumps({**CHAT, **fields}))
    prompt, completion = worst_case_tokens(req, size, context_length=1000)
    assert prompt + completion == 1000  # the rest of the context
    assert worst_case_tokens(req, size, context_length=None)[1] == UNKNOWN_CONTEXT_COMPLETION
