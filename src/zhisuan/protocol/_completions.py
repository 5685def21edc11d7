"""``POST /v1/completions`` request."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StrictBool, field_validator

from zhisuan.protocol._common import MAX_TEXT_LOGPROBS, _GenerationFields, check_text

DEFAULT_MAX_TOKENS = 16
"""OpenAI's ``max_tokens`` for a text completion that states none, or ``null``."""


class CompletionRequest(_GenerationFields):
    prompt: str | list[str]
    max_tokens: Annotated[int, Field(ge=1, strict=True)] = DEFAULT_MAX_TOKENS
    echo: StrictBool | None = False
    logprobs: Annotated[int, Field(ge=0, le=MAX_TEXT_LOGPROBS, strict=True)] | None = None
    """The most likely tokens to list per completion token (null: no log-probabilities)."""

    @field_validator("max_tokens", mode="before")
    @classmethod
    def _null_is_the_default(cls, value: Any) -> Any:
        # OpenAI's default for a text completion, not the rest of the context as for a chat
        return DEFAULT_MAX_TOKENS if value is None else value

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

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]
