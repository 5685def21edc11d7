"""The boolean fields of a generation request, and ``stream_options``, checked as OpenAI
checks them: a flag is a JSON boolean (or null where OpenAI allows it, which
``stream_options.include_usage`` is too), never a string or a number coerced to one, refused
in OpenAI's words (``Invalid type for 'stream': expected a boolean, but got a string
instead.``), and ``stream_options`` comes only with ``stream: true``. Both ways the models
validate are covered: the gateway's (the raw JSON bytes) and the worker's (the decoded
dict)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from zhisuan.protocol import ChatCompletionRequest, CompletionRequest
from zhisuan.protocol.errors import from_validation_error

CHAT: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
TEXT: dict[str, Any] = {"model": "m", "prompt": "once upon"}
Request = ChatCompletionRequest | CompletionRequest
Model = type[ChatCompletionRequest] | type[CompletionRequest]
REQUESTS: list[tuple[Model, dict[str, Any]]] = [
    (ChatCompletionRequest, CHAT),
    (CompletionRequest, TEXT),
]
NOT_BOOLEANS: list[tuple[Any, str]] = [
    ("yes", "a string"),
    ("true", "a string"),
    ("false", "a string"),
    (1, "an integer"),
    (0, "an integer"),
    ("1", "a string"),
    (1.0, "a decimal number"),
    ([], "an array"),
    ({}, "an object"),
]


def _gateway(model: Model, body: dict[str, Any]) -> Request:
    return model.model_validate_json(json.dumps(body))


def _worker(model: Model, body: dict[str, Any]) -> Request:
    return model.model_validate(json.loads(json.dumps(body)))


VALIDATE = pytest.mark.parametrize("validate", [_gateway, _worker], ids=["gateway", "worker"])
Validate = Callable[[Model, dict[str, Any]], Request]


def _refusal(
    validate: Validate, model: Model, body: dict[str, Any], code: str = "invalid_parameter"
) -> tuple[str | None, str]:
    with pytest.raises(ValidationError) as info:
        validate(model, body)
    err = from_validation_error(info.value, model)
    assert (err.status_code, err.error_type, err.code) == (400, "invalid_request_error", code)
    return err.param, err.message


def _flag(param: str, value: Any) -> dict[str, Any]:
    """The request fields that give ``param`` the ``value``."""
    if param == "stream_options.include_usage":
        return {"stream": True, "stream_options": {"include_usage": value}}
    return {param: value}


FLAGS = ["stream", "ignore_eos", "stream_options.include_usage"]
FLAG_CASES = [
    pytest.param(
        model,
        {**base, **_flag(param, value)},
        param,
        kind,
        id=f"{model.__name__}-{param}-{value!r}",
    )
    for model, base in REQUESTS
    for param in (FLAGS if model is ChatCompletionRequest else [*FLAGS, "echo"])
    for value, kind in NOT_BOOLEANS
]


@VALIDATE
@pytest.mark.parametrize(("model", "body", "param", "kind"), FLAG_CASES)
def test_a_flag_that_is_not_a_json_boolean_is_refused_naming_it(
    validate: Validate, model: Model, body: dict[str, Any], param: str, kind: str
) -> None:
    found, message = _refusal(validate, model, body, code="invalid_type")
    assert found == param
    assert message == f"Invalid type for '{param}': expected a boolean, but got {kind} instead."


@VALIDATE
@pytest.mark.parametrize(("model", "base"), REQUESTS)
def test_json_booleans_and_null_are_taken(
    validate: Validate, model: Model, base: dict[str, Any]
) -> None:
    for stream in (True, False):
        req = validate(model, {**base, "stream": stream, "ignore_eos": stream})
        assert (req.stream, req.ignore_eos) == (stream, stream)
    assert validate(model, {**base, "stream": None}).stream is None
    assert validate(model, {**base, **_flag("stream_options.include_usage", True)}).include_usage
    quiet = validate(model, {**base, **_flag("stream_options.include_usage", False)})
    assert quiet.include_usage is False


@VALIDATE
@pytest.mark.parametrize(("model", "base"), REQUESTS)
def test_a_null_include_usage_with_a_stream_is_taken_as_false(
    validate: Validate, model: Model, base: dict[str, Any]
) -> None:
    req = validate(model, {**base, **_flag("stream_options.include_usage", None)})
    assert req.stream is True
    assert req.stream_options is not None and req.include_usage is False


@VALIDATE
@pytest.mark.parametrize(("model", "base"), REQUESTS)
@pytest.mark.parametrize("stream", [{}, {"stream": False}, {"stream": None}], ids=str)
def test_stream_options_without_a_stream_is_refused(
    validate: Validate, model: Model, base: dict[str, Any], stream: dict[str, Any]
) -> None:
    for options in ({"include_usage": True}, {"include_usage": False}, {}):
        found, message = _refusal(validate, model, {**base, **stream, "stream_options": options})
        assert found == "stream_options"
        assert message == (
            "Invalid value for 'stream_options': The 'stream_options' parameter is only "
            "allowed when 'stream' is enabled."
        )


@VALIDATE
@pytest.mark.parametrize(("model", "base"), REQUESTS)
def test_null_stream_options_without_a_stream_is_taken(
    validate: Validate, model: Model, base: dict[str, Any]
) -> None:
    for stream in ({}, {"stream": False}, {"stream": None}):
        req = validate(model, {**base, **stream, "stream_options": None})
        assert req.include_usage is False


@VALIDATE
def test_an_invalid_stream_is_the_error_reported_not_its_options(validate: Validate) -> None:
    body = {**CHAT, "stream": "yes", "stream_options": {"include_usage": True}}
    with pytest.raises(ValidationError) as info:
        validate(ChatCompletionRequest, body)
    assert [e["loc"] for e in info.value.errors()] == [("stream",)]
