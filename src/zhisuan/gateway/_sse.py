"""Metering what a worker answers, as the gateway relays it: SSE streams and JSON bodies.

Workers asked with ``X-Zhisuan-Usage: always`` put a comment line ``: usage <prompt>
<completion>`` in every stream event (SSE comments are ignored by clients), with the counts
so far, and always end a stream with the usage chunk, which is dropped again when the
client did not ask for ``stream_options.include_usage``; a whole (non-stream) answer
carries the counts in an ``x-zhisuan-usage: <prompt> <completion> [<decode ms>]`` header,
the last the milliseconds from its first token to the answer. Their JSON is compact, so a
few byte patterns tell the events apart; none of them can occur inside a JSON string, where
quotes and newlines are escaped.
"""

from __future__ import annotations

import json
import time
from typing import Any

from zhisuan.gateway._exchange import Exchange

DONE = b"data: [DONE]"
DONE_EVENT = DONE + b"\n\n"
_USAGE_COMMENT = b": usage "
_LINE_USAGE = b"\n" + _USAGE_COMMENT
_CHUNK = b'data: {"id":'
_SOME_CHOICES = b'"choices":[{'
_NO_CHOICES = b'"choices":[]'
_ERROR = b'data: {"error"'
_DECODER = json.JSONDecoder()


class StreamMeter:
    """Times and meters one relayed stream.

    Args:
        ex: the request's record (first token time, counts, error).
        include_usage: whether the client asked for the usage chunk.
    """

    __slots__ = ("_tally", "ex", "include_usage")

    def __init__(self, ex: Exchange, include_usage: bool) -> None:
        self.ex = ex
        self.include_usage = include_usage
        self._tally = b""

    def events(self, events: bytes) -> bytes:
        """Meter complete SSE events (each ending in a blank line); returns what to pass on.

        A run of token events (each led by its ``: usage`` comment) is passed on unread but
        for one look for the first token; the counts are cumulative, so only the last run's
        are needed, and :meth:`count` reads them when the stream ends or breaks. Anything
        else (an error, the usage chunk, the end, a worker without comments) is read event
        by event.
        """
        ex = self.ex
        if (
            events.startswith(_USAGE_COMMENT)
            and DONE not in events
            and _NO_CHOICES not in events
            and _ERROR not in events
        ):
            self._tally = events
            if ex.first_token_at is None and _SOME_CHOICES in events:
                ex.mark_first_token()
            return events
        self.count()
        out = [e for e in events[:-2].split(b"\n\n") if e.endswith(DONE) or self._inspect(e)]
        return b"\n\n".join(out) + b"\n\n" if out else b""

    def count(self) -> None:
        """Take the counts of the last run of token events, if not taken yet."""
        events, self._tally = self._tally, b""
        if events:
            at = events.rfind(_LINE_USAGE) + 1  # 0: the run's first event, which leads it
            _take_counts(self.ex, events[at : events.find(b"\n", at)])

    def _inspect(self, event: bytes) -> bool:
        """Meter one event; returns whether to pass it on."""
        ex, data = self.ex, event
        if event.startswith(_USAGE_COMMENT):
            line, _, data = event.partition(b"\n")
            _take_counts(ex, line)
            if data.startswith(_CHUNK):
                if _SOME_CHOICES in data:
                    ex.mark_first_token()
                    return True
                if _NO_CHOICES in data:  # the usage chunk, whose counts the comment gave
                    return self.include_usage
        if not data.startswith(b"data: "):
            return True
        try:
            obj: Any = json.loads(data[6:])
        except ValueError:
            return True
        if not isinstance(obj, dict):
            return True
        if "error" in obj:
            ex.error = str(obj["error"])[:500]
            ex.http_status = 503
            return True
        usage = obj.get("usage")
        if usage:
            ex.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            ex.completion_tokens = int(usage.get("completion_tokens") or 0)
            if not obj.get("choices"):
                return self.include_usage
        if obj.get("choices"):
            ex.mark_first_token()
        return True


def take_usage(ex: Exchange, content: bytes) -> None:
    """Take the counts from a JSON answer's ``usage`` object (parsing only it when it can)."""
    at = content.rfind(b'"usage":')
    try:
        usage: Any = _DECODER.raw_decode(content[at + 8 :].decode().lstrip())[0] if at >= 0 else {}
    except ValueError:
        try:
            usage = json.loads(content).get("usage")
        except (ValueError, AttributeError):
            return
    if not isinstance(usage, dict):
        return
    ex.prompt_tokens = int(usage.get("prompt_tokens") or 0)
    ex.completion_tokens = int(usage.get("completion_tokens") or 0)


def _take_counts(ex: Exchange, line: bytes) -> None:
    take_counts(ex, line[len(_USAGE_COMMENT) :])


def take_counts(ex: Exchange, counts: bytes) -> bool:
    """Take ``<prompt> <completion>`` counts (a worker's usage comment or header)."""
    parts = counts.split()
    if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
        ex.prompt_tokens, ex.completion_tokens = int(parts[0]), int(parts[1])
        return True
    return False


def take_answer_counts(ex: Exchange, header: bytes) -> bool:
    """Take a whole answer's ``<prompt> <completion> [<decode ms>]`` header, and time its
    first token from the decode time: a whole answer's first token is the worker's to see.

    Returns:
        False when the counts are not there to take.
    """
    prompt, _, rest = header.strip().partition(b" ")
    completion, _, decode = rest.partition(b" ")
    if not (prompt.isdigit() and completion.isdigit()):
        return False
    ex.prompt_tokens, ex.completion_tokens = int(prompt), int(completion)
    try:
        decode_s = float(decode) / 1e3 if decode else None
    except ValueError:
        decode_s = None
    if decode_s is not None and decode_s >= 0:
        ex.first_token_at = max(ex.started, time.perf_counter() - decode_s)
    return True
