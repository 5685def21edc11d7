"""Types shared by the chat and completion requests."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

MAX_STOP_SEQUENCES = 4
MAX_TOP_LOGPROBS = 20
"""The most alternatives a chat completion's ``top_logprobs`` asks for per token."""
MAX_TEXT_LOGPROBS = 5
"""The most alternatives a text completion's ``logprobs`` asks for per token."""
VERBATIM = "verbatim"
"""A key of a refusal's ``ctx`` (:func:`refusal`): its message is OpenAI's whole message."""
CODE = "code"
"""A key of a refusal's ``ctx`` (:func:`refusal`): OpenAI's ``code`` for it, or None."""
SEED_MIN = -(2**63)
SEED_MAX = 2**63 - 1
"""``seed`` is a signed 64-bit integer (what torch's generators take)."""


def new_id(prefix: str) -> str:
    """An OpenAI-style object id, e.g. ``chatcmpl-3f9c…``."""
    return f"{prefix}-{secrets.token_hex(12)}"


def now() -> int:
    return int(time.time())


def check_text(value: str, what: str) -> str:
    """``value``, unless it holds a lone UTF-16 surrogate.

    JSON can spell one (``"\\ud800"``) and Python decodes it, but it is no Unicode text: no
    tokenizer can encode it, so a request carrying it is refused up front (400) rather than
    failing in the engine.

    Args:
        value: a text an engine tokenizes (a message, a prompt, a stop sequence, an input).
        what: its name for the message.

    Raises:
        ValueError: ``value`` holds a lone surrogate.
    """
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(value[exc.start])
        raise ValueError(
            f"{what} contains a lone UTF-16 surrogate (\\u{code:04x}) at character "
            f"{exc.start}; it is not valid Unicode text"
        ) from None
    return value


def refusal(kind: str, message: str, code: str | None = None) -> PydanticCustomError:
    """A validation error answered as OpenAI answers it: its message as it is, OpenAI's own
    words (not wrapped in ``Invalid value for '<param>': …``), and OpenAI's ``code``
    (``null`` where OpenAI sends none; ``zhisuan.protocol.errors``)."""
    return PydanticCustomError(kind, message, {VERBATIM: True, CODE: code})


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: StrictBool | None = False
    """OpenAI takes ``null`` here, meaning ``false``."""


Stop = str | list[str] | None


class _GenerationFields(BaseModel):
    """Sampling fields common to chat and text completions.

    Flags are ``StrictBool``, as OpenAI's are: a JSON ``true`` or ``false`` (or ``null`` where
    the field is optional), never ``"yes"``, ``"true"`` or ``1``, which pydantic's lax mode
    would take for a boolean. Numbers are strict too (``strict=True``): a JSON number, never
    a string holding one; an integer field takes no fraction or boolean, a float field takes
    an integer. ``stream_options`` comes only with ``stream: true``.
    """

    model_config = ConfigDict(extra="ignore")

    model: Annotated[str, Field(min_length=1, max_length=256)]
    temperature: Annotated[float, Field(ge=0.0, le=2.0, strict=True)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0, strict=True)] | None = None
    n: Annotated[int, Field(ge=1, le=1, strict=True)] | None = None
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None  # after ``stream``: its check reads it
    stop: Stop = None
    seed: Annotated[int, Field(ge=SEED_MIN, le=SEED_MAX, strict=True)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0, strict=True)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0, strict=True)] | None = None
    user: str | None = None
    ignore_eos: StrictBool = False
    """An extension vLLM also accepts: generate exactly ``max_tokens`` (for load tests)."""

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: Stop) -> Stop:
        if isinstance(value, list):
            if len(value) > MAX_STOP_SEQUENCES:
                raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed")
            if any(not s for s in value):
                raise ValueError("stop sequences must be non-empty strings")
            for s in value:
                check_text(s, "a stop sequence")
        elif isinstance(value, str):
            if not value:
                raise ValueError("stop must be a non-empty string")
            check_text(value, "stop")
        return value

    @field_validator("stream_options")
    @classmethod
    def _only_with_stream(
        cls, value: StreamOptions | None, info: ValidationInfo
    ) -> StreamOptions | None:
        # runs only when the field is sent; a ``stream`` that failed its own check is not
        # in ``info.data``, and its error is the one reported
        if value is not None and info.data.get("stream", True) is not True:
            raise PydanticCustomError(
                "stream_options_without_stream",
                "The 'stream_options' parameter is only allowed when 'stream' is enabled",
            )
        return value

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


@dataclass(slots=True)
class SamplingParams:
    """What an engine needs to generate, after the request has been validated.

    Attributes:
        max_tokens: completion budget in tokens (already clipped to the context); 0 only
            with ``prompt_logprobs``.
        temperature: 0 means greedy, and so does any temperature below 1e-5
            (``zhisuan.engines._greedy``).
        top_p: nucleus mass in (0, 1].
        seed: makes sampling repeatable for one request when set (a signed 64-bit
            integer; an engine with fewer bits maps it onto its own range).
        presence_penalty: subtracted from the logit of every token the completion has
            produced so far (OpenAI's definition; the prompt does not count), in [-2, 2].
        frequency_penalty: subtracted from a token's logit once per time the completion
            has produced it so far, in [-2, 2].
        stop: strings that end the completion; not included in the output.
        ignore_eos: generate through end-of-sequence until ``max_tokens`` (load tests).
        logprobs: None: no log-probabilities; ``k``: the log-probability of every
            completion token and of the ``k`` most likely tokens at its position (0 to
            :data:`MAX_TOP_LOGPROBS`), from the model's logits before temperature, top_p
            and penalties.
        prompt_logprobs: score the prompt's tokens too (a text completion's ``echo`` with
            ``logprobs``): the log-probability of each prompt token after the first, given
            those before it, and the ``logprobs`` most likely tokens at its position; with
            ``max_tokens`` 0 the prompt is only scored, nothing is generated.
        tenant: whose request it is: an engine's waiting requests take turns between
            tenants (``zhisuan.engines._turns``).
    """

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: int | None = None
    prompt_logprobs: bool = False
    tenant: str = ""
