"""``POST /v1/completions`` request."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StrictBool, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from zhisuan.protocol._common import MAX_TEXT_LOGPROBS, _GenerationFields, check_text

DEFAULT_MAX_TOKENS = 16
"""OpenAI's ``max_tokens`` for a text completion that states none, or ``null``."""


class CompletionRequest(_GenerationFields):
    prompt: str | list[str]
    echo: StrictBool | None = False  # before ``max_tokens``: its check reads it
    max_tokens: Annotated[int, Field(strict=True)] = DEFAULT_MAX_TOKENS
    """At least 1, or 0 with ``echo: true``: the prompt echoed (and scored, with
    ``logprobs``), nothing generated."""
    logprobs: Annotated[int, Field(ge=0, le=MAX_TEXT_LOGPROBS, strict=True)] | None = None
    """The most likely tokens to list per token (null: no log-probabilities)."""

    @field_validator("max_tokens", mode="before")
    @classmethod
    def _null_is_the_default(cls, value: Any) -> Any:
        # OpenAI's default for a text completion, not the rest of the context as for a chat
        return DEFAULT_MAX_TOKENS if value is None else value

    @field_validator("max_tokens")
    @classmethod
    def _zero_only_with_echo(cls, value: int, info: ValidationInfo) -> int:
        # an ``echo`` that failed its own check is not in ``info.data``; its error is the one
        # reported. The refusal is pydantic's for a bound (``ge``), worded as before.
        least = 0 if info.data.get("echo", True) is True else 1
        if value < least:
            raise PydanticCustomError(
                "greater_than_equal", "Input should be greater than or equal to {ge}", {"ge": least}
            )
        return value

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("exactly one prompt per request is supported")
        check_text(value if isinstance(value, str) else value[0], "prompt")
        return value

    def wanted_logprobs(self) -> int | None:
        """Alternatives per token the request asks for (``SamplingParams.logprobs``)."""
        return self.logprobs

    def wanted_prompt_logprobs(self) -> bool:
        """Whether the prompt's tokens are scored too (``echo`` with ``logprobs``;
        ``SamplingParams.prompt_logprobs``)."""
        return self.echo is True and self.logprobs is not None

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]
