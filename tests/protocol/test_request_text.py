"""Validation of what the engines take from a request: text they can tokenize, a seed
their generators can hold. Refused here, such input is a 400 naming the field on both the
gateway and the worker, never an engine failure."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from zhisuan.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from zhisuan.protocol.errors import from_validation_error

CHAT = '{"model": "m", "messages": [{"role": "user", "content": "hi"}]'


def _refusal(model: type[BaseModel], raw: str) -> tuple[str | None, str]:
    with pytest.raises(ValidationError) as info:
        model.model_validate(json.loads(raw))  # JSON spells the surrogate, Python keeps it
    err = from_validation_error(info.value)
    assert err.status_code == 400
    return err.param, err.message


@pytest.mark.parametrize(
    ("model", "raw", "param"),
    [
        (
            ChatCompletionRequest,
            '{"model": "m", "messages": [{"role": "user", "content": "hi \\ud800"}]}',
            "messages[0].content",
        ),
        (
            ChatCompletionRequest,
            '{"model": "m", "messages": [{"role": "system", "content": "ok"}, '
            '{"role": "user", "content": [{"type": "text", "text": "\\udfff"}]}]}',
            "messages[1].content",
        ),
        (ChatCompletionRequest, CHAT + ', "stop": "\\ud800"}', "stop"),
        (ChatCompletionRequest, CHAT + ', "stop": ["ok", "x\\udbff"]}', "stop"),
        (CompletionRequest, '{"model": "m", "prompt": "\\ud800 hi"}', "prompt"),
        (CompletionRequest, '{"model": "m", "prompt": ["hi \\udc00"]}', "prompt"),
        (EmbeddingRequest, '{"model": "m", "input": "\\ud800"}', "input"),
        (EmbeddingRequest, '{"model": "m", "input": ["ok", "\\ud800"]}', "input"),
    ],
)
def test_a_lone_surrogate_is_refused_naming_the_field(
    model: type[BaseModel], raw: str, param: str
) -> None:
    found, message = _refusal(model, raw)
    assert found == param
    assert "lone UTF-16 surrogate" in message


def test_text_beyond_the_basic_plane_is_accepted() -> None:
    text = "你好 😀 \U0010ffff é"  # a surrogate *pair* in JSON is one character
    raw = json.dumps({"model": "m", "prompt": text, "stop": ["😀"]})
    assert CompletionRequest.model_validate(json.loads(raw)).prompt == text
    chat: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": text}]}
    assert ChatCompletionRequest.model_validate(chat).plain_messages()[0]["content"] == text


@pytest.mark.parametrize("seed", [2**63, 2**64, -(2**63) - 1])
def test_a_seed_beyond_64_bits_is_refused(seed: int) -> None:
    found, _ = _refusal(CompletionRequest, json.dumps({"model": "m", "prompt": "x", "seed": seed}))
    assert found == "seed"


@pytest.mark.parametrize("seed", [0, -1, 2**63 - 1, -(2**63)])
def test_every_64_bit_seed_is_accepted(seed: int) -> None:
    assert (
        CompletionRequest.model_validate({"model": "m", "prompt": "x", "seed": seed}).seed == seed
    )
