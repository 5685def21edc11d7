"""Worst-case token bounds and parameter names in validation errors."""

from __future__ import annotations

from zhisuan.gateway._admission import worst_case_tokens
from zhisuan.gateway._errors import param_of
from zhisuan.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest


def test_chat_bound_covers_bytes_and_template() -> None:
    req = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "héllo"}], "max_tokens": 10}
    )
    prompt, completion = worst_case_tokens(req, context_length=512)
    assert prompt >= len("héllo".encode())
    assert completion == 10


def test_without_max_tokens_the_rest_of_the_context_is_reserved() -> None:
    req = CompletionRequest.model_validate({"model": "m", "prompt": "abc", "max_tokens": None})
    prompt, completion = worst_case_tokens(req, context_length=100)
    assert prompt + completion == 100


def test_embeddings_reserve_no_completion() -> None:
    req = EmbeddingRequest.model_validate({"model": "m", "input": ["a", "bb"]})
    assert worst_case_tokens(req, 512)[1] == 0


def test_param_names() -> None:
    assert param_of(("body", "temperature")) == "temperature"
    assert param_of(("body", "messages", 0, "role")) == "messages[0].role"
