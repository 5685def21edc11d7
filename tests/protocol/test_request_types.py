"""A request field of the wrong JSON type is refused in OpenAI's words, with the ``param``
path OpenAI gives and the code ``invalid_type``: ``Invalid type for 'messages[0].content':
expected one of a string or array of objects, but got an integer instead.`` The gateway (the
raw JSON bytes) and a worker (the decoded dict) give the same answer; other refusals (a
range, a missing field, an unknown value) keep their own precise messages."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from zhisuan.errors import InvalidParameter
from zhisuan.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from zhisuan.protocol.errors import from_validation_error

CHAT: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
TEXT: dict[str, Any] = {"model": "m", "prompt": "once upon"}
EMBED: dict[str, Any] = {"model": "m", "input": "hello"}
ROLES = "'system', 'developer', 'user', 'assistant', or 'tool'"


def _refused(model: type[BaseModel], body: Any, how: str) -> InvalidParameter:
    with pytest.raises(ValidationError) as info:
        if how == "gateway":
            model.model_validate_json(json.dumps(body))
        else:
            model.model_validate(json.loads(json.dumps(body)))
    err = from_validation_error(info.value, model)
    assert (err.status_code, err.error_type) == (400, "invalid_request_error")
    return err


HOW = pytest.mark.parametrize("how", ["gateway", "worker"])
TYPE_CASES = [
    (ChatCompletionRequest, {**CHAT, "stream": "yes"}, "stream", "a boolean", "a string"),
    (ChatCompletionRequest, {**CHAT, "n": "2"}, "n", "an integer", "a string"),
    (ChatCompletionRequest, {**CHAT, "seed": 1.5}, "seed", "an integer", "a decimal number"),
    (ChatCompletionRequest, {**CHAT, "temperature": "hot"}, "temperature", "a decimal",
     "a string"),
    (ChatCompletionRequest, {**CHAT, "top_p": False}, "top_p", "a decimal", "a boolean"),
    (ChatCompletionRequest, {**CHAT, "user": {"a": 1}}, "user", "a string", "an object"),
    (ChatCompletionRequest, {**CHAT, "model": 7}, "model", "a string", "an integer"),
    (ChatCompletionRequest, {**CHAT, "messages": "ping"}, "messages", "an array of objects",
     "a string"),
    (ChatCompletionRequest, {**CHAT, "messages": None}, "messages", "an array of objects",
     "null"),
    (ChatCompletionRequest, {**CHAT, "messages": ["ping"]}, "messages[0]", "an object",
     "a string"),
    (ChatCompletionRequest, {**CHAT, "messages": [{"role": "user", "content": 7}]},
     "messages[0].content", "one of a string or array of objects", "an integer"),
    (ChatCompletionRequest,
     {**CHAT, "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": [7]}]},
     "messages[1].content[0]", "an object", "an integer"),
    (ChatCompletionRequest, {**CHAT, "messages": [{"role": 1, "content": "a"}]},
     "messages[0].role", f"one of {ROLES}", "an integer"),
    (ChatCompletionRequest, {**CHAT, "messages": [{"role": "user", "name": ["x"]}]},
     "messages[0].name", "a string", "an array"),
    (ChatCompletionRequest, {**CHAT, "stop": 5}, "stop", "one of a string or array of strings",
     "an integer"),
    (ChatCompletionRequest, {**CHAT, "stop": ["a", 5]}, "stop[1]", "a string", "an integer"),
    (ChatCompletionRequest, {**CHAT, "stream": True, "stream_options": "usage"},
     "stream_options", "an object", "a string"),
    (ChatCompletionRequest, {**CHAT, "stream": True, "stream_options": {"include_usage": 1}},
     "stream_options.include_usage", "a boolean", "an integer"),
    (ChatCompletionRequest, {**CHAT, "max_completion_tokens": [1]}, "max_completion_tokens",
     "an integer", "an array"),
    (CompletionRequest, {**TEXT, "prompt": 5}, "prompt", "one of a string or array of strings",
     "an integer"),
    (CompletionRequest, {**TEXT, "prompt": None}, "prompt",
     "one of a string or array of strings", "null"),
    (CompletionRequest, {**TEXT, "prompt": [{"text": "x"}]}, "prompt[0]", "a string",
     "an object"),
    (CompletionRequest, {**TEXT, "echo": "no"}, "echo", "a boolean", "a string"),
    (CompletionRequest, {**TEXT, "max_tokens": "16"}, "max_tokens", "an integer", "a string"),
    (EmbeddingRequest, {**EMBED, "input": 3}, "input", "one of a string or array of strings",
     "an integer"),
    (EmbeddingRequest, {**EMBED, "input": ["a", None]}, "input[1]", "a string", "null"),
    (EmbeddingRequest, {**EMBED, "encoding_format": 1}, "encoding_format",
     "one of 'float' or 'base64'", "an integer"),
    (EmbeddingRequest, {**EMBED, "dimensions": 2.5}, "dimensions", "an integer",
     "a decimal number"),
]  # fmt: skip


@HOW
@pytest.mark.parametrize(
    ("model", "body", "param", "expected", "got"),
    TYPE_CASES,
    ids=[f"{c[0].__name__}-{c[2]}-{c[4]}" for c in TYPE_CASES],
)
def test_a_wrong_type_is_refused_in_openais_words(
    how: str, model: type[BaseModel], body: dict[str, Any], param: str, expected: str, got: str
) -> None:
    err = _refused(model, body, how)
    assert (err.param, err.code) == (param, "invalid_type")
    assert err.message == f"Invalid type for '{param}': expected {expected}, but got {got} instead."


@HOW
def test_a_body_that_is_not_an_object_is_a_type_error_of_the_body(how: str) -> None:
    err = _refused(ChatCompletionRequest, [CHAT], how)
    assert (err.param, err.code) == (None, "invalid_type")
    assert err.message == (
        "Invalid type for the request body: expected an object, but got an array instead."
    )


VALUE_CASES = [
    (ChatCompletionRequest, {**CHAT, "temperature": 5}, "temperature", "invalid_parameter",
     "Invalid value for 'temperature': Input should be less than or equal to 2."),
    (ChatCompletionRequest, {**CHAT, "messages": []}, "messages", "invalid_parameter",
     "Invalid value for 'messages': List should have at least 1 item after validation, not 0."),
    (ChatCompletionRequest, {**CHAT, "messages": [{"role": "wizard"}]}, "messages[0].role",
     "invalid_parameter", "Invalid value for 'messages[0].role': Input should be 'system', "
     "'developer', 'user', 'assistant' or 'tool'."),
    (ChatCompletionRequest, {"model": "m"}, "messages", "missing_required_parameter",
     "Missing required parameter: 'messages'."),
    (ChatCompletionRequest, {**CHAT, "messages": [{"content": "hi"}]}, "messages[0].role",
     "missing_required_parameter", "Missing required parameter: 'messages[0].role'."),
    (ChatCompletionRequest, {**CHAT, "stop": ["a", "b", "c", "d", "e"]}, "stop",
     "invalid_parameter",
     "Invalid value for 'stop': Value error, at most 4 stop sequences are allowed."),
    (CompletionRequest, {**TEXT, "prompt": ["a", "b"]}, "prompt", "invalid_parameter",
     "Invalid value for 'prompt': Value error, exactly one prompt per request is supported."),
    (CompletionRequest, {**TEXT, "max_tokens": 0}, "max_tokens", "invalid_parameter",
     "Invalid value for 'max_tokens': Input should be greater than or equal to 1."),
    (EmbeddingRequest, {**EMBED, "encoding_format": "hex"}, "encoding_format",
     "invalid_parameter", "Invalid value for 'encoding_format': Input should be 'float' or "
     "'base64'."),
]  # fmt: skip


@HOW
@pytest.mark.parametrize(
    ("model", "body", "param", "code", "message"),
    VALUE_CASES,
    ids=[f"{c[0].__name__}-{c[2]}-{c[3]}" for c in VALUE_CASES],
)
def test_other_refusals_keep_their_precise_messages(
    how: str, model: type[BaseModel], body: dict[str, Any], param: str, code: str, message: str
) -> None:
    err = _refused(model, body, how)
    assert (err.param, err.code, err.message) == (param, code, message)


def test_without_the_model_a_type_error_is_worded_from_pydantics_error_alone() -> None:
    """As for FastAPI's own validation (no request model to read the schema of)."""
    with pytest.raises(ValidationError) as info:
        ChatCompletionRequest.model_validate({**CHAT, "stream": "yes"})
    err = from_validation_error(info.value)
    assert (err.param, err.code) == ("stream", "invalid_type")
    assert err.message == "Invalid type for 'stream': expected a boolean, but got a string instead."
    with pytest.raises(ValidationError) as info:
        ChatCompletionRequest.model_validate({**CHAT, "stop": 5})
    err = from_validation_error(info.value)
    assert (err.param, err.code) == ("stop", "invalid_type")
    assert err.message == (
        "Invalid type for 'stop': expected one of a string or array, but got an integer instead."
    )
