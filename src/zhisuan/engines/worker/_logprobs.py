"""Log-probabilities: which requests an engine can answer with them, and their OpenAI shapes.

A chat completion asks with ``logprobs: true`` (and ``top_logprobs``: 0 to 20 alternatives
per token); each choice then carries ``{"content": [{"token", "logprob", "bytes",
"top_logprobs": [{"token", "logprob", "bytes"}, …]}, …], "refusal": null}``, a stream's
chunks the entries of the tokens each carries. A text completion asks with ``logprobs: k``
(0 to 5) and gets ``{"tokens", "token_logprobs", "top_logprobs", "text_offset"}``: each
position's top list as ``{token: logprob}``, with the chosen token added where it is not
among the ``k`` (so up to ``k + 1`` keys, as OpenAI's), and the offsets counted from the
start of the prompt, as OpenAI counts them.

A token that is not whole UTF-8 text (part of a character) is named by its bytes: in a chat
completion with ``\\xNN`` escapes for the bytes that are not text (``bytes`` has them all),
in a text completion as ``bytes:\\xNN``, OpenAI's spelling there. A value too small for a
float (``-inf``) is sent as -9999.0, which JSON can carry.
"""

from __future__ import annotations

import math
from typing import Any

from zhisuan.engines.base import EngineInfo, TokenLogprobs, TokenProb
from zhisuan.errors import InvalidParameter
from zhisuan.protocol import ChatCompletionRequest, CompletionRequest

FLOOR = -9999.0
"""What a log-probability that is not finite is sent as."""


def check(req: ChatCompletionRequest | CompletionRequest, info: EngineInfo) -> None:
    """Refuse a request for log-probabilities that this deployment cannot answer.

    Raises:
        InvalidParameter: the engine does not return log-probabilities (``param``
            ``logprobs``, code ``unsupported_parameter``), or a text completion asks for
            them with ``echo`` (OpenAI's refusal: no engine here scores a prompt).
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
    if isinstance(req, CompletionRequest) and req.echo:
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


def text_logprobs(entries: list[TokenLogprobs], prompt_chars: int) -> dict[str, Any]:
    """A text completion choice's (or chunk's) ``logprobs`` for ``entries``, the offsets
    counted from the start of a prompt of ``prompt_chars`` characters."""
    tokens, values, tops, offsets = [], [], [], []
    for entry in entries:
        tokens.append(_text_token(entry.token.bytes))
        values.append(_finite(entry.token.logprob))
        top: dict[str, float] = {}
        for alt in (*entry.top, entry.token):  # the chosen token, if not among the top
            top.setdefault(_text_token(alt.bytes), _finite(alt.logprob))
        tops.append(top)
        offsets.append(prompt_chars + entry.offset)
    return {
        "tokens": tokens,
        "token_logprobs": values,
        "top_logprobs": tops,
        "text_offset": offsets,
    }


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
