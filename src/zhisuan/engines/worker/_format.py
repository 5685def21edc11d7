"""OpenAI response objects and SSE framing, as plain dicts (no logic, no I/O).

Shapes follow OpenAI's API: ``chat.completion`` / ``chat.completion.chunk`` and
``text_completion`` objects, ``usage`` in every non-stream body and, when asked, in a final
chunk with ``choices: []``; a choice's ``logprobs`` is null unless the request asked for
them (:mod:`._logprobs`).
"""

from __future__ import annotations

import base64
import json
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from zhisuan.engines.base import PromptLogprobs, TokenLogprobs
from zhisuan.engines.worker._logprobs import chat_logprobs, text_logprobs

DONE = b"data: [DONE]\n\n"
USAGE_HEADER = "x-zhisuan-usage"
TIMING_HEADER = "server-timing"
"""A whole answer's ``server-timing: worker;dur=<ms>`` (W3C Server-Timing): the worker's
time on the request, from its job's start to the answer. A stream carries the same in a
comment line of its ``[DONE]`` event. Callers tell the worker's time from the rest of
the latency with it: the gateway's benchmark measures the gateway's share this way."""

Kind = Literal["chat", "completion"]


@dataclass(frozen=True, slots=True)
class Job:
    """The identity of one completion response.

    Attributes:
        kind: chat or text completion.
        id: ``chatcmpl-…`` or ``cmpl-…``.
        created: Unix seconds.
        model: the public model name.
        include_usage: send the final usage chunk (client asked, or the gateway did).
        usage_field: the client asked for usage, so chunks carry ``"usage": null`` too.
        request_id: the gateway's ``X-Request-Id`` (else ``id``), for logs and metering.
        usage_comments: prefix every event with ``: usage <prompt> <completion>`` (an SSE
            comment clients ignore) so the gateway can meter a stream that breaks.
        started: ``time.perf_counter()`` when the job began (see :data:`TIMING_HEADER`).
        logprobs: the request asked for log-probabilities: choices carry them, not null.
        prompt_chars: characters of a text completion's prompt, where the ``text_offset``
            of its tokens starts.
    """

    kind: Kind
    id: str
    created: int
    model: str
    include_usage: bool = False
    usage_field: bool = False
    request_id: str = ""
    usage_comments: bool = False
    started: float = field(default_factory=time.perf_counter)
    logprobs: bool = False
    prompt_chars: int = 0

    @property
    def object(self) -> str:
        return "chat.completion" if self.kind == "chat" else "text_completion"

    @property
    def chunk_object(self) -> str:
        return "chat.completion.chunk" if self.kind == "chat" else "text_completion"


def sse(obj: dict[str, Any], counts: tuple[int, int] | None = None) -> bytes:
    """One server-sent event carrying ``obj`` as JSON.

    Args:
        obj: the event's JSON payload.
        counts: (prompt, completion) tokens so far, sent as a ``: usage p c`` comment line.
    """
    data = b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    if counts is not None:
        data = f": usage {counts[0]} {counts[1]}\n".encode() + data
    return data + b"\n\n"


def answer_headers(
    job: Job, answer: dict[str, Any], first_token_at: float | None = None
) -> dict[str, str]:
    """A whole answer's headers: its :data:`TIMING_HEADER`, and ``x-zhisuan-usage:
    <prompt> <completion> [<decode ms>]`` for the gateway, which then reads the counts
    without parsing the body, and times the first token from the milliseconds between it
    and the answer (``first_token_at``, a ``time.perf_counter()``), which a client of a
    whole answer never sees."""
    headers = {TIMING_HEADER: timing(job)}
    if job.usage_comments:
        use = answer.get("usage") or {}
        counts = f"{use.get('prompt_tokens', 0)} {use.get('completion_tokens', 0)}"
        if first_token_at is not None:
            counts += f" {(time.perf_counter() - first_token_at) * 1e3:.3f}"
        headers[USAGE_HEADER] = counts
    return headers


def timing(job: Job) -> str:
    """The Server-Timing value of ``job`` so far."""
    return f"worker;dur={(time.perf_counter() - job.started) * 1e3:.3f}"


def done(job: Job) -> bytes:
    """A stream's last event: ``[DONE]``, led by the worker's time as a comment line."""
    return f": {TIMING_HEADER} {timing(job)}\n".encode() + DONE


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def logprobs(
    job: Job, entries: list[TokenLogprobs] | None, prompt: PromptLogprobs | None = None
) -> dict[str, Any] | None:
    """A choice's ``logprobs``: null unless the request asked for them (a text completion's
    led by its prompt's tokens, ``prompt``, when it was scored)."""
    if not job.logprobs:
        return None
    if job.kind == "chat":
        return chat_logprobs(entries or [])
    return text_logprobs(entries or [], job.prompt_chars, prompt)


def response(
    job: Job,
    text: str,
    finish_reason: str,
    use: dict[str, int],
    entries: list[TokenLogprobs] | None = None,
    prompt: PromptLogprobs | None = None,
) -> dict[str, Any]:
    """The non-stream body of a chat or text completion (``entries``: the log-probabilities
    of its tokens, when asked; ``prompt``: its prompt's, echoed)."""
    choice: dict[str, Any]
    if job.kind == "chat":
        message = {"role": "assistant", "content": text, "refusal": None}
        choice = {"index": 0, "message": message, "logprobs": logprobs(job, entries)}
    else:
        choice = {"index": 0, "text": text, "logprobs": logprobs(job, entries, prompt)}
    choice["finish_reason"] = finish_reason
    return {
        "id": job.id,
        "object": job.object,
        "created": job.created,
        "model": job.model,
        "system_fingerprint": None,
        "choices": [choice],
        "usage": use,
    }


def chunk(
    job: Job,
    *,
    text: str | None = None,
    role: bool = False,
    finish_reason: str | None = None,
    entries: list[TokenLogprobs] | None = None,
    prompt: PromptLogprobs | None = None,
) -> dict[str, Any]:
    """One streamed chunk: the first (``role``), a text piece (with the log-probabilities of
    the tokens it carries, ``entries``, when asked; the echo's with its prompt's,
    ``prompt``), or the last (``finish_reason``)."""
    choice: dict[str, Any]
    lp = logprobs(job, entries, prompt) if text is not None else None
    if job.kind == "chat":
        delta: dict[str, str] = {}
        if role:
            delta["role"] = "assistant"
            delta["content"] = ""
        if text is not None:
            delta["content"] = text
        choice = {"index": 0, "delta": delta, "logprobs": lp}
    else:
        choice = {"index": 0, "text": text or "", "logprobs": lp}
    choice["finish_reason"] = finish_reason
    out: dict[str, Any] = {
        "id": job.id,
        "object": job.chunk_object,
        "created": job.created,
        "model": job.model,
        "system_fingerprint": None,
        "choices": [choice],
    }
    if job.usage_field:
        out["usage"] = None
    return out


def usage_chunk(job: Job, use: dict[str, int]) -> dict[str, Any]:
    """The final chunk of a stream with ``include_usage``: no choices, only usage."""
    return {
        "id": job.id,
        "object": job.chunk_object,
        "created": job.created,
        "model": job.model,
        "system_fingerprint": None,
        "choices": [],
        "usage": use,
    }


def embedding_item(index: int, vector: list[float], encoding: str) -> dict[str, Any]:
    """One ``embedding`` object; base64 is little-endian float32 bytes, as OpenAI sends."""
    value: list[float] | str = vector
    if encoding == "base64":
        value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return {"object": "embedding", "index": index, "embedding": value}
