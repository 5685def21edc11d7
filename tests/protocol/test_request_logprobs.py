"""``logprobs`` and ``top_logprobs``, checked as OpenAI checks them.

A chat completion's ``logprobs`` is a JSON boolean (or null) and its ``top_logprobs`` an
integer from 0 to 20 that comes only with ``logprobs: true`` (OpenAI's own message
otherwise); a text completion's ``logprobs`` is an integer from 0 to 5, or null. Both ways
the models validate are covered: the gateway's (the raw JSON bytes) and the worker's (the
decoded dict).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from zhisuan.protocol import ChatCompletionRequest, CompletionRequest, SamplingParams
from zhisuan.protocol.errors import from_validation_error

CHAT: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
TEXT: dict[str, Any] = {"model": "m", "prompt": "once upon"}
Model = type[ChatCompletionRequest] | type[CompletionRequest]
Request = ChatCompletionRequest | CompletionRequest
WITHOUT_LOGPROBS = "The 'top_logprobs' parameter is only allowed when 'logprobs' is enabled."


def _gateway(model: Model, body: dict[str, Any]) -> Request:
    return model.model_validate_json(json.dumps(body))


def _worker(model: Model, body: dict[str, Any]) -> Request:
    return model.model_validate(json.loads(json.dumps(body)))


VALIDATE = pytest.mark.parametrize("validate", [_gateway, _worker], ids=["gateway", "worker"])
Validate = Callable[[Model, dict[str, Any]], Request]


def _refusal(validate: Validate, model: Model, fields: dict[str, Any]) -> dict[str, Any]:
    base = CHAT if model is ChatCompletionRequest else TEXT
    with pytest.raises(ValidationError) as info:
        validate(model, {**base, **fields})
    body: dict[str, Any] = from_validation_error(info.value, model).to_body()["error"]
    assert body["type"] == "invalid_request_error"
    return body


@VALIDATE
def test_a_chat_completion_asks_with_a_flag_and_a_count(validate: Validate) -> None:
    cases: list[tuple[dict[str, Any], int | None]] = [
        ({}, None),
        ({"logprobs": False}, None),
        ({"logprobs": None}, None),
        ({"logprobs": None, "top_logprobs": None}, None),
        ({"logprobs": True}, 0),
        ({"logprobs": True, "top_logprobs": None}, 0),
        ({"logprobs": True, "top_logprobs": 0}, 0),
        ({"logprobs": True, "top_logprobs": 7}, 7),
        ({"logprobs": True, "top_logprobs": 20}, 20),
    ]
    for fields, wanted in cases:
        req = validate(ChatCompletionRequest, {**CHAT, **fields})
        assert isinstance(req, ChatCompletionRequest)
        assert req.wanted_logprobs() == wanted, fields


@VALIDATE
@pytest.mark.parametrize(
    "fields",
    [{"top_logprobs": 2}, {"top_logprobs": 0}, {"logprobs": False, "top_logprobs": 3}],
    ids=str,
)
def test_top_logprobs_without_logprobs_is_refused_in_openais_words(
    validate: Validate, fields: dict[str, Any]
) -> None:
    error = _refusal(validate, ChatCompletionRequest, fields)
    assert (error["param"], error["message"]) == ("top_logprobs", WITHOUT_LOGPROBS)
    assert error["code"] is None  # OpenAI sends null for this one
    # a logprobs of the wrong type is the error reported, not its consequence
    error = _refusal(validate, ChatCompletionRequest, {**fields, "logprobs": "yes"})
    assert (error["param"], error["code"]) == ("logprobs", "invalid_type")


@VALIDATE
@pytest.mark.parametrize(
    ("model", "fields", "param", "message"),
    [
        (ChatCompletionRequest, {"logprobs": "true"}, "logprobs", "expected a boolean"),
        (ChatCompletionRequest, {"logprobs": 1}, "logprobs", "expected a boolean"),
        (
            ChatCompletionRequest,
            {"logprobs": True, "top_logprobs": 2.0},
            "top_logprobs",
            "expected an integer",
        ),
        (
            ChatCompletionRequest,
            {"logprobs": True, "top_logprobs": "2"},
            "top_logprobs",
            "expected an integer",
        ),
        (CompletionRequest, {"logprobs": True}, "logprobs", "expected an integer"),
        (CompletionRequest, {"logprobs": "1"}, "logprobs", "expected an integer"),
        (CompletionRequest, {"logprobs": 1.5}, "logprobs", "expected an integer"),
    ],
    ids=str,
)
def test_a_value_of_the_wrong_type_is_refused_naming_it(
    validate: Validate, model: Model, fields: dict[str, Any], param: str, message: str
) -> None:
    error = _refusal(validate, model, fields)
    assert (error["param"], error["code"]) == (param, "invalid_type")
    assert message in error["message"]


@VALIDATE
@pytest.mark.parametrize(
    ("model", "fields", "param", "bound"),
    [
        (ChatCompletionRequest, {"logprobs": True, "top_logprobs": 21}, "top_logprobs", "20"),
        (ChatCompletionRequest, {"logprobs": True, "top_logprobs": -1}, "top_logprobs", "0"),
        (CompletionRequest, {"logprobs": 6}, "logprobs", "5"),
        (CompletionRequest, {"logprobs": -1}, "logprobs", "0"),
    ],
    ids=str,
)
def test_a_count_out_of_range_is_refused(
    validate: Validate, model: Model, fields: dict[str, Any], param: str, bound: str
) -> None:
    error = _refusal(validate, model, fields)
    assert (error["param"], error["code"]) == (param, "invalid_parameter")
    assert error["message"].startswith(f"Invalid value for '{param}': ")
    assert error["message"].endswith(f" {bound}.")


@VALIDATE
def test_a_text_completion_asks_with_a_count(validate: Validate) -> None:
    for fields, wanted in [({}, None), ({"logprobs": None}, None), ({"logprobs": 0}, 0)]:
        req = validate(CompletionRequest, {**TEXT, **fields})
        assert isinstance(req, CompletionRequest)
        assert req.wanted_logprobs() == wanted
    req = validate(CompletionRequest, {**TEXT, "logprobs": 5})
    assert isinstance(req, CompletionRequest) and req.wanted_logprobs() == 5


def test_sampling_asks_for_none_unless_told() -> None:
    assert SamplingParams(max_tokens=1).logprobs is None
