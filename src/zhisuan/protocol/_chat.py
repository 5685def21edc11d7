"""``POST /v1/chat/completions`` request."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationInfo, field_validator

from zhisuan.protocol._common import (
    MAX_TOP_LOGPROBS,
    StreamOptions,
    _GenerationFields,
    check_text,
    refusal,
)

__all__ = ["ChatCompletionRequest", "ChatMessage", "StreamOptions"]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None

    @field_validator("content")
    @classmethod
    def _check_content(
        cls, value: str | list[dict[str, Any]] | None
    ) -> str | list[dict[str, Any]] | None:
        if isinstance(value, str):
            check_text(value, "content")
        elif value is not None:
            for part in value:
                if isinstance(part.get("text"), str):
                    check_text(part["text"], "a text part")
        return value

    def text(self) -> str:
        """The message's text; list content keeps only its text parts."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError("only text content parts are supported")
            parts.append(part["text"])
        return "".join(parts)


class ChatCompletionRequest(_GenerationFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1, strict=True)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1, strict=True)] | None = None
    logprobs: StrictBool | None = False
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS, strict=True)] | None = None
    """Only with ``logprobs: true`` (after it: its check reads it), as OpenAI has it."""

    @field_validator("top_logprobs")
    @classmethod
    def _only_with_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        # a ``logprobs`` that failed its own check is not in ``info.data``; its error is the
        # one reported
        if value is not None and info.data.get("logprobs", True) is not True:
            raise refusal(
                "top_logprobs_without_logprobs",
                "The 'top_logprobs' parameter is only allowed when 'logprobs' is enabled.",
            )
        return value

    def wanted_logprobs(self) -> int | None:
        """Alternatives per token the request asks for (``SamplingParams.logprobs``): None
        without ``logprobs: true``."""
        return (self.top_logprobs or 0) if self.logprobs else None

    @field_validator("messages")
    @classmethod
    def _check_parts(cls, value: list[ChatMessage]) -> list[ChatMessage]:
        for message in value:
            if not isinstance(message.content, str):
                message.text()  # raises on non-text parts
        return value

    def requested_max_tokens(self) -> int | None:
        """``max_completion_tokens`` wins over the older ``max_tokens``."""
        return self.max_completion_tokens or self.max_tokens

    def plain_messages(self) -> list[dict[str, str]]:
        """Messages as ``{"role", "content"}`` dicts for a chat template."""
        out = []
        for m in self.messages:
            role = "system" if m.role == "developer" else m.role
            out.append({"role": role, "content": m.text()})
        return out


ChatCompletionRequest.model_rebuild()
_ = StreamOptions
