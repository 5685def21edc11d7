"""Log-probabilities: which requests an engine can answer with them, and their OpenAI shapes.

A chat completion asks with ``logprobs: true`` (and ``top_logprobs``: 0 to 20 alternatives
per token); each choice then carries ``{"content": [{"token", "logprob", "bytes",
"top_logprobs": [{"token", "logprob", "bytes"}, …]}, …], "refusal": null}``, a stream's
chunks the entries of the tokens each carries. A text completion asks with ``logprobs: k``
(0 to 5) and gets ``{"tokens", "token_logprobs", "top_logprobs", "text_offset"}``: each
position's top list as ``{token: logprob}``, with the chosen token added where it is not
among the ``k`` (so up to ``k + 1`` keys, as OpenAI's), and the offsets counted from the
start of the prompt, as OpenAI counts them. With ``echo`` the prompt's tokens come first
(an engine that scores prompts, ``EngineInfo.prompt_logprobs``): the first with ``null``
for its value and its top list (it has no context), the offsets counted from the start of
the echoed text; a stream's first chunk, the echo's, carries them.

A token that is not whole UTF-8 text (part of a character) is named by its bytes: in a chat
completion with ``\\xNN`` escapes for the bytes that are not text (``bytes`` has them all),
in a text completion as ``bytes:\\xNN``, OpenAI's spelling there. A value too small for a
float (``-inf``) is sent as -9999.0, which JSON can carry.
"""

from __future__ import annotations

import math
from typing import Any

from zhisuan.engines.base import EngineInfo, PromptLogprobs, TokenLogprobs, TokenProb
from zhisuan.errors import InvalidParameter
from zhisuan.protocol import ChatCompletionRequest, CompletionRequest

FLOOR = -9999.0
"""What a log-probability that is not finite is sent as."""


def check(req: ChatCompletionRequest | CompletionRequest, info: EngineInfo) -> None:
    """Refuse a request for log-probabilities that this deployment cannot answer.

    Raises:
        InvalidParameter: the engine does not return log-probabilities (``param``
            ``logprobs``, code ``unsupported_parameter``), or a text completion asks for
            them with ``echo`` of an engine that does not score prompts (OpenAI's refusal).
    """
    if req.wanted_logprobs() is None:
        return
    if not info.logprobs:
        raise InvalidParameter(
            "Unsupported parameter: 'logprobs' is not supported with this model: this "
            f"deployment's engine ({info.engine}) does not return log-probabilities.",
            param="logprobs",
            code="unsupported_parameter",
        )
    if isinstance(req, CompletionRequest) and req.echo and not info.prompt_logprobs:
        raise InvalidParameter(
            "Setting 'echo' and 'logprobs' at the same time is not supported for this model.",
            param="echo",
        )


def chat_logprobs(entries: list[TokenLogprobs]) -> dict[str, Any]:
    """A chat choice's (or chunk's) ``logprobs`` for ``entries``."""
    content = []
    for entry in entries:
        item = _chat_token(entry.token)
        item["top_logprobs"] = [_chat_token(t) for t in entry.top]
        content.append(item)
    return {"content": content, "refusal": None}


_TextRow = tuple[str, float | None, dict[str, float] | None, int]
"""A text completion's token: its name, log-probability, top list and offset."""


def text_logprobs(
    entries: list[TokenLogprobs], prompt_chars: int, prompt: PromptLogprobs | None = None
) -> dict[str, Any]:
    """A text completion choice's (or chunk's) ``logprobs`` for ``entries``, the offsets
    counted from the start of a prompt of ``prompt_chars`` characters, led by the prompt's
    tokens when it was scored (``prompt``, whose offsets count from its start)."""
    rows: list[_TextRow] = []
    if prompt is not None:
        rows.append((_text_token(prompt.first_bytes), None, None, 0))  # no context: nulls
        rows.extend(_text_row(entry, 0) for entry in prompt.rest)
    rows.extend(_text_row(entry, prompt_chars) for entry in entries)
    return {
        "tokens": [row[0] for row in rows],
        "token_logprobs": [row[1] for row in rows],
        "top_logprobs": [row[2] for row in rows],
        "text_offset": [row[3] for row in rows],
    }


def _text_row(entry: TokenLogprobs, start: int) -> _TextRow:
    top: dict[str, float] = {}
    for alt in (*entry.top, entry.token):  # the chosen token, if not among the top
        top.setdefault(_text_token(alt.bytes), _finite(alt.logprob))
    name = _text_token(entry.token.bytes)
    return name, _finite(entry.token.logprob), top, start + entry.offset


def _chat_token(prob: TokenProb) -> dict[str, Any]:
    return {
        "token": prob.bytes.decode("utf-8", "backslashreplace"),
        "logprob": _finite(prob.logprob),
        "bytes": list(prob.bytes),
    }


def _text_token(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + raw.decode("utf-8", "backslashreplace")


def _finite(value: float) -> float:
    return value if math.isfinite(value) else FLOOR
