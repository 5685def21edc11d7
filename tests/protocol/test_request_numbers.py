"""The number fields of a request, checked as OpenAI checks them: a JSON number, never a
string holding one (``"0.5"``), and an integer field takes no fraction (``4.0``) or boolean;
a float field takes a JSON integer (``1``). A refusal is in OpenAI's words (``Invalid type
for 'temperature': expected a decimal, but got a string instead.``). Both ways the models
validate are covered: the gateway's (the raw JSON bytes) and the worker's (the decoded
dict)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from zhisuan.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from zhisuan.protocol.errors import from_validation_error

CHAT: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
TEXT: dict[str, Any] = {"model": "m", "prompt": "once upon"}
EMBED: dict[str, Any] = {"model": "m", "input": "hello"}

FLOATS = ["temperature", "top_p", "presence_penalty", "frequency_penalty"]
INTS = ["n", "seed", "max_tokens"]
CASES: list[tuple[type[BaseModel], dict[str, Any], str, str]] = [
    *[(ChatCompletionRequest, CHAT, f, "a decimal") for f in FLOATS],
    *[(CompletionRequest, TEXT, f, "a decimal") for f in FLOATS],
    *[(ChatCompletionRequest, CHAT, f, "an integer") for f in [*INTS, "max_completion_tokens"]],
    *[(CompletionRequest, TEXT, f, "an integer") for f in INTS],
    (EmbeddingRequest, EMBED, "dimensions", "an integer"),
]


def _validate(model: type[BaseModel], body: dict[str, Any], how: str) -> BaseModel:
    if how == "gateway":
        return model.model_validate_json(json.dumps(body))
    return model.model_validate(json.loads(json.dumps(body)))


@pytest.mark.parametrize("how", ["gateway", "worker"])
@pytest.mark.parametrize(
    ("model", "base", "field", "kind"),
    CASES,
    ids=[f"{m.__name__}-{f}" for m, _, f, _ in CASES],
)
def test_a_number_sent_as_a_string_is_refused_naming_its_field(
    how: str, model: type[BaseModel], base: dict[str, Any], field: str, kind: str
) -> None:
    with pytest.raises(ValidationError) as info:
        _validate(model, {**base, field: "1"}, how)
    err = from_validation_error(info.value, model)
    assert (err.status_code, err.param, err.code) == (400, field, "invalid_type")
    assert err.message == f"Invalid type for '{field}': expected {kind}, but got a string instead."


@pytest.mark.parametrize("how", ["gateway", "worker"])
@pytest.mark.parametrize("value", [1.0, 4.5, True])
@pytest.mark.parametrize("field", ["max_tokens", "seed", "n"])
def test_an_integer_field_takes_no_fraction_and_no_boolean(
    how: str, value: Any, field: str
) -> None:
    with pytest.raises(ValidationError) as info:
        _validate(ChatCompletionRequest, {**CHAT, field: value}, how)
    err = from_validation_error(info.value, ChatCompletionRequest)
    assert (err.param, err.code) == (field, "invalid_type")
    got = "a boolean" if value is True else "a decimal number"
    assert err.message == f"Invalid type for '{field}': expected an integer, but got {got} instead."


@pytest.mark.parametrize("how", ["gateway", "worker"])
def test_json_numbers_are_taken_and_a_float_field_takes_an_integer(how: str) -> None:
    body = {**CHAT, "temperature": 1, "top_p": 1, "presence_penalty": -2, "seed": -3}
    req = _validate(ChatCompletionRequest, {**body, "max_tokens": 4, "n": 1}, how)
    assert isinstance(req, ChatCompletionRequest)
    assert (req.temperature, req.top_p, req.presence_penalty) == (1.0, 1.0, -2.0)
    assert isinstance(req.temperature, float)
    assert (req.seed, req.max_tokens, req.n) == (-3, 4, 1)
    embed = _validate(EmbeddingRequest, {**EMBED, "dimensions": 8}, how)
    assert isinstance(embed, EmbeddingRequest) and embed.dimensions == 8
