"""Metering relayed answers: token runs, the usage chunk, errors, text that looks like markers."""

from __future__ import annotations

import json
from typing import Any

from zhisuan.gateway._exchange import Exchange
from zhisuan.gateway._sse import DONE_EVENT, StreamMeter, take_usage


def chunk(counts: tuple[int, int] | None, **fields: Any) -> bytes:
    """One event as a worker writes it: compact JSON, led by its counts comment."""
    body = {"id": "chatcmpl-1", "object": "chat.completion.chunk", **fields}
    data = b"data: " + json.dumps(body, separators=(",", ":")).encode()
    head = b"" if counts is None else b": usage %d %d\n" % counts
    return head + data + b"\n\n"


def token(text: str, counts: tuple[int, int] | None) -> bytes:
    return chunk(counts, choices=[{"index": 0, "delta": {"content": text}}])


def exchange() -> Exchange:
    return Exchange(request_id="req-1", endpoint="chat.completions", model="m", stream=True)


def test_a_run_of_tokens_passes_unchanged_and_is_counted_when_asked() -> None:
    ex = exchange()
    meter = StreamMeter(ex, include_usage=False)
    run = token("Hi", (8, 1)) + token(' ": usage 99 99 "choices":[] x', (8, 2))
    assert meter.events(run) == run
    assert ex.first_token_at is not None
    assert (ex.prompt_tokens, ex.completion_tokens) == (0, 0)  # read lazily
    meter.count()
    assert (ex.prompt_tokens, ex.completion_tokens) == (8, 2)  # the real comment, not the text


def test_the_end_drops_the_usage_chunk_unless_asked_and_takes_its_counts() -> None:
    end = (
        chunk((8, 3), choices=[{"index": 0, "delta": {}, "finish_reason": "length"}])
        + chunk((8, 3), choices=[], usage={"prompt_tokens": 8, "completion_tokens": 3})
        + DONE_EVENT
    )
    for include_usage in (False, True):
        ex = exchange()
        meter = StreamMeter(ex, include_usage)
        meter.events(token("a", (8, 1)))
        out = meter.events(end)
        assert out.endswith(DONE_EVENT)
        assert (b'"usage":' in out) is include_usage
        assert (ex.prompt_tokens, ex.completion_tokens) == (8, 3)


def test_an_error_event_marks_the_record() -> None:
    ex = exchange()
    meter = StreamMeter(ex, include_usage=False)
    meter.events(token("a", (5, 1)))
    error = b': usage 5 1\ndata: {"error":{"message":"engine failed"}}\n\n'
    assert meter.events(error + DONE_EVENT) == error + DONE_EVENT
    assert ex.http_status == 503 and "engine failed" in str(ex.error)
    assert ex.completion_tokens == 1


def test_events_without_comments_are_read_one_by_one() -> None:
    ex = exchange()
    meter = StreamMeter(ex, include_usage=False)
    spaced = b'data: {"id": "x", "choices": [{"index": 0, "text": "hi"}]}\n\n'
    assert meter.events(spaced) == spaced
    assert ex.first_token_at is not None


def test_take_usage_reads_the_usage_object_of_a_json_answer() -> None:
    ex = exchange()
    body = {"choices": [{"message": {"content": '"usage": {"prompt_tokens": 1}'}}]}
    content = json.dumps({**body, "usage": {"prompt_tokens": 7, "completion_tokens": 4}})
    take_usage(ex, content.encode())
    assert (ex.prompt_tokens, ex.completion_tokens) == (7, 4)
