"""Metering relayed answers: token runs, the usage chunk, errors, text that looks like markers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from zhisuan.gateway._ends import answered
from zhisuan.gateway._exchange import Exchange
from zhisuan.gateway._sse import DONE_EVENT, StreamMeter, take_answer_counts, take_usage


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


def test_a_whole_answers_counts_and_first_token_come_from_its_header() -> None:
    ex = exchange()
    ex.started -= 0.1  # the request arrived 100 ms ago
    assert take_answer_counts(ex, b"9 5 40.0")
    assert (ex.prompt_tokens, ex.completion_tokens) == (9, 5)
    assert ex.ttft_s == pytest.approx(0.06, abs=0.01)  # the answer came 40 ms after it
    ex.close()
    assert ex.tpot_s == pytest.approx(0.04 / 4, abs=0.0025)
    late = exchange()
    assert take_answer_counts(late, b"1 2 5000")  # longer than the request: at its arrival
    assert late.first_token_at == late.started
    for header in (b"9 5", b"9 5 soon", b"9 5 -3"):  # no time to count back from
        ex = exchange()
        assert take_answer_counts(ex, header) and ex.completion_tokens == 5
        assert ex.first_token_at is None
    assert not take_answer_counts(exchange(), b"nine 5 1.0")


class _Finished:
    def __init__(self) -> None:
        self.done: list[Exchange] = []

    def finish(self, ex: Exchange) -> None:
        self.done.append(ex)


@pytest.mark.parametrize(
    ("header", "known"),
    [
        (b"9 5 2.5", True),  # the worker timed its first token
        (b"9 5", False),  # nobody did: no TTFT and no TPOT rather than made-up ones
        (b"9 1", True),  # one token: the answer is its first token
        (None, True),  # counts from the body, with one token
    ],
)
def test_a_whole_answer_has_a_first_token_only_where_known(
    header: bytes | None, known: bool
) -> None:
    gw, ex = _Finished(), exchange()
    headers = {} if header is None else {b"x-zhisuan-usage": header}
    content = b'{"usage":{"prompt_tokens":9,"completion_tokens":1}}'
    answered(gw, ex, 200, headers, content)  # type: ignore[arg-type]
    assert gw.done == [ex] and ex.status == "ok" and ex.prompt_tokens == 9
    assert (ex.ttft_s is not None) == known
    assert (ex.tpot_s is not None) == (known and ex.completion_tokens > 1)
