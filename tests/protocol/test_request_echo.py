"""A text completion's ``echo`` and ``max_tokens: 0``: the prompt echoed (and scored, with
``logprobs``) and nothing generated, only with ``echo: true``; without it ``max_tokens: 0`` is
refused as before. Both ways the models validate are covered: the gateway's (the raw JSON
bytes) and the worker's (the decoded dict).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from zhisuan.protocol import CompletionRequest
from zhisuan.protocol.errors import from_validation_error

TEXT: dict[str, Any] = {"model": "m", "prompt": "once upon"}
HOW = pytest.mark.parametrize("how", ["gateway", "worker"])


def _validate(body: dict[str, Any], how: str) -> CompletionRequest:
    if how == "gateway":
        return CompletionRequest.model_validate_json(json.dumps(body))
    return CompletionRequest.model_validate(json.loads(json.dumps(body)))


def _refused(body: dict[str, Any], how: str) -> dict[str, Any]:
    with pytest.raises(ValidationError) as info:
        _validate(body, how)
    error: dict[str, Any] = from_validation_error(info.value, CompletionRequest).to_body()["error"]
    return error


@HOW
def test_max_tokens_zero_with_echo_asks_for_the_prompt_alone(how: str) -> None:
    req = _validate({**TEXT, "echo": True, "max_tokens": 0}, how)
    assert (req.max_tokens, req.echo, req.wanted_prompt_logprobs()) == (0, True, False)
    req = _validate({**TEXT, "echo": True, "max_tokens": 0, "logprobs": 3}, how)
    assert req.wanted_prompt_logprobs() and req.wanted_logprobs() == 3
    # the prompt is scored with echo and logprobs, whatever the budget
    assert _validate({**TEXT, "echo": True, "logprobs": 0}, how).wanted_prompt_logprobs()
    for fields in ({"logprobs": 2}, {"echo": False, "logprobs": 2}, {"echo": None}):
        assert not _validate({**TEXT, **fields}, how).wanted_prompt_logprobs()


@HOW
@pytest.mark.parametrize(
    "fields",
    [
        {"max_tokens": 0},
        {"max_tokens": 0, "echo": False},
        {"max_tokens": 0, "echo": None},
        {"max_tokens": 0, "logprobs": 1},
        {"max_tokens": -1},
    ],
    ids=str,
)
def test_max_tokens_zero_without_echo_is_refused_as_before(
    how: str, fields: dict[str, Any]
) -> None:
    error = _refused({**TEXT, **fields}, how)
    assert error == {
        "message": "Invalid value for 'max_tokens': Input should be greater than or equal to 1.",
        "type": "invalid_request_error",
        "param": "max_tokens",
        "code": "invalid_parameter",
    }


@HOW
def test_a_negative_budget_with_echo_and_an_echo_of_the_wrong_type(how: str) -> None:
    error = _refused({**TEXT, "echo": True, "max_tokens": -1}, how)
    assert error["param"] == "max_tokens"
    assert error["message"].endswith("greater than or equal to 0.")
    # an echo of the wrong type is the error reported, not its consequence
    error = _refused({**TEXT, "echo": "yes", "max_tokens": 0}, how)
    assert (error["param"], error["code"]) == ("echo", "invalid_type")
