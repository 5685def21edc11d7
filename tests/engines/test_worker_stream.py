"""Streaming from the worker: SSE shape, usage chunks, failures and client disconnects."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import httpx
import openai
import pytest
from _worker_fakes import FakeEngine, serve

from zhisuan.engines.base import Delta
from zhisuan.engines.worker import create_app
from zhisuan.engines.worker._format import Job
from zhisuan.engines.worker._requests import RequestRecord
from zhisuan.engines.worker._stream import completion_events

MESSAGES = [{"role": "user", "content": "say something"}]


def _events(resp: httpx.Response) -> list[str]:
    return [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]


def test_chat_stream(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="fake-chat", messages=MESSAGES, max_tokens=4, stream=True
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "the quick brown fox"
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert all(c.usage is None for c in chunks)


def test_include_usage_adds_a_final_chunk(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="fake-chat",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (4, 12)
    assert chunks[-2].choices[0].finish_reason == "stop"


def test_gateway_header_forces_usage(chat_url: str) -> None:
    body = {"model": "fake-chat", "messages": MESSAGES, "stream": True, "max_tokens": 2}
    plain = httpx.post(f"{chat_url}/v1/chat/completions", json=body)
    assert plain.headers["content-type"].startswith("text/event-stream")
    events = _events(plain)
    assert events[-1] == "[DONE]"
    assert all("usage" not in json.loads(e) for e in events[:-1])
    metered = httpx.post(
        f"{chat_url}/v1/chat/completions", json=body, headers={"X-Zhisuan-Usage": "always"}
    )
    events = _events(metered)
    usage_chunk = json.loads(events[-2])
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
    # chunks before it look exactly as the client asked (no "usage": null fields)
    assert all("usage" not in json.loads(e) for e in events[:-2])


def test_gateway_header_puts_the_counts_of_a_whole_answer_in_a_header(chat_url: str) -> None:
    body = {"model": "fake-chat", "messages": MESSAGES, "max_tokens": 2}
    plain = httpx.post(f"{chat_url}/v1/chat/completions", json=body)
    assert "x-zhisuan-usage" not in plain.headers
    metered = httpx.post(
        f"{chat_url}/v1/chat/completions", json=body, headers={"X-Zhisuan-Usage": "always"}
    )
    usage = metered.json()["usage"]
    assert usage["completion_tokens"] == 2
    prompt, completion, decode_ms = metered.headers["x-zhisuan-usage"].split()
    assert (int(prompt), int(completion)) == (usage["prompt_tokens"], 2)
    assert 0 <= float(decode_ms) <= _worker_ms(metered.headers["server-timing"])


def test_a_whole_answer_says_how_long_before_it_its_first_token_came() -> None:
    # 20 ms before each of 4 tokens: the first comes at 20 ms, the answer at 80 ms
    engine = FakeEngine("fake-chat", context_length=100, eos_after=50, delay=0.02)
    app = create_app(lambda: engine, model_name="fake-chat", engine_kind="fake")
    body = {"model": "fake-chat", "messages": MESSAGES, "max_tokens": 4}
    with serve(app) as url:
        resp = httpx.post(
            f"{url}/v1/chat/completions", json=body, headers={"X-Zhisuan-Usage": "always"}
        )
    decode_ms = float(resp.headers["x-zhisuan-usage"].split()[2])
    worker_ms = _worker_ms(resp.headers["server-timing"])
    assert 55 <= decode_ms <= worker_ms - 18


def _worker_ms(timing: str) -> float:
    name, _, dur = timing.partition(";dur=")
    assert name == "worker", timing
    return float(dur)


def test_answers_carry_the_workers_time(chat_url: str) -> None:
    body = {"model": "fake-chat", "messages": MESSAGES, "max_tokens": 2}
    started = time.perf_counter()
    whole = httpx.post(f"{chat_url}/v1/chat/completions", json=body)
    elapsed_ms = (time.perf_counter() - started) * 1e3
    assert 0 < _worker_ms(whole.headers["server-timing"]) <= elapsed_ms
    started = time.perf_counter()
    stream = httpx.post(f"{chat_url}/v1/chat/completions", json={**body, "stream": True})
    elapsed_ms = (time.perf_counter() - started) * 1e3
    # the stream's time comes last, as a comment line of its [DONE] event
    last = stream.text.split("\n\n")[-2]
    comment, done = last.split("\n")
    assert done == "data: [DONE]" and comment.startswith(": server-timing ")
    assert 0 < _worker_ms(comment.removeprefix(": server-timing ")) <= elapsed_ms
    assert _events(stream)[-1] == "[DONE]"


def test_completion_stream(client: openai.OpenAI) -> None:
    chunks = list(
        client.completions.create(
            model="fake-chat",
            prompt="once upon",
            max_tokens=3,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.object == "text_completion" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "the quick brown"
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


def test_stream_with_stop(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="fake-chat", messages=MESSAGES, stop="brown", stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "the quick "
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_errors_before_the_first_token_keep_their_status(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="fake-chat", messages=MESSAGES, max_tokens=1000, stream=True
        )


def test_failure_mid_stream_sends_an_error_event() -> None:
    engine = FakeEngine("fake-chat", fail_after=2)
    app = create_app(lambda: engine, model_name="fake-chat", engine_kind="fake")
    with serve(app) as url:
        body = {"model": "fake-chat", "messages": MESSAGES, "stream": True}
        events = _events(httpx.post(f"{url}/v1/chat/completions", json=body, timeout=5))
        assert events[-1] == "[DONE]"
        error = json.loads(events[-2])["error"]
        assert error["code"] == "engine_unavailable"
        assert error["type"] == "server_error"
        with (
            openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client,
            pytest.raises(openai.APIError),
        ):
            for _ in client.chat.completions.create(
                model="fake-chat", messages=MESSAGES, stream=True
            ):
                pass
        assert httpx.get(f"{url}/health").json()["active"] == 0


def _wait_for(predicate: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_client_disconnect_cancels_the_stream() -> None:
    engine = FakeEngine("fake-chat", context_length=100_000, eos_after=10_000, delay=0.02)
    app = create_app(lambda: engine, model_name="fake-chat", engine_kind="fake")
    with serve(app) as url:
        body = {"model": "fake-chat", "messages": MESSAGES, "stream": True}
        with (
            httpx.Client(timeout=5) as http,
            http.stream("POST", f"{url}/v1/chat/completions", json=body) as resp,
        ):
            lines = resp.iter_lines()
            seen = [line for line, _ in zip(lines, range(6), strict=False)]
            assert any(line.startswith("data: ") for line in seen)
            assert httpx.get(f"{url}/health").json()["active"] == 1
        # leaving the block closes the connection mid-stream
        assert _wait_for(lambda: len(engine.aborted) == 1)
        assert engine.finished == []
        assert _wait_for(lambda: httpx.get(f"{url}/health").json()["active"] == 0)
        assert httpx.get(f"{url}/health").json()["busy_s"] > 0


def test_client_disconnect_cancels_a_non_stream_request() -> None:
    engine = FakeEngine("fake-chat", context_length=100_000, eos_after=10_000, delay=0.02)
    app = create_app(lambda: engine, model_name="fake-chat", engine_kind="fake")
    with serve(app) as url:
        body = {"model": "fake-chat", "messages": MESSAGES}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/chat/completions", json=body, timeout=0.3)
        assert _wait_for(lambda: len(engine.aborted) == 1)
        assert _wait_for(lambda: httpx.get(f"{url}/health").json()["active"] == 0)


def test_gateway_metering_comments_and_request_record(chat_url: str) -> None:
    body = {"model": "fake-chat", "messages": MESSAGES, "stream": True, "max_tokens": 3}
    headers = {"X-Zhisuan-Usage": "always", "X-Request-Id": "gw-req-1"}
    resp = httpx.post(f"{chat_url}/v1/chat/completions", json=body, headers=headers)
    raw_events = resp.text.split("\n\n")
    data_events = [e for e in raw_events if "data: {" in e]
    assert all(e.startswith(": usage 4 ") for e in data_events)
    assert [e.split("\n")[0] for e in data_events][-1] == ": usage 4 3"
    record = httpx.get(f"{chat_url}/zhisuan/requests/gw-req-1").json()
    assert record["state"] == "finished"
    assert (record["prompt_tokens"], record["completion_tokens"]) == (4, 3)
    assert httpx.get(f"{chat_url}/zhisuan/requests/nope").status_code == 404


def test_official_client_ignores_the_metering_comments(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="fake-chat",
            messages=MESSAGES,
            max_tokens=2,
            stream=True,
            extra_headers={"X-Zhisuan-Usage": "always"},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "the quick"


def test_aborted_stream_leaves_its_final_count() -> None:
    engine = FakeEngine("fake-chat", context_length=100_000, eos_after=10_000, delay=0.02)
    app = create_app(lambda: engine, model_name="fake-chat", engine_kind="fake")
    with serve(app) as url:
        body = {"model": "fake-chat", "messages": MESSAGES, "stream": True}
        headers = {"X-Zhisuan-Usage": "always", "X-Request-Id": "gw-abort"}
        with (
            httpx.Client(timeout=5) as http,
            http.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers) as r,
        ):
            for line, _ in zip(r.iter_lines(), range(8), strict=False):
                assert line is not None
        record = httpx.get(f"{url}/zhisuan/requests/gw-abort", params={"wait": 5}).json()
        assert record["state"] == "cancelled"
        assert record["prompt_tokens"] == 4
        assert record["completion_tokens"] >= 2
        assert engine.aborted == ["gw-abort"]  # the engine saw the gateway's request id


def test_events_ready_together_go_out_in_one_chunk() -> None:
    """One chunk per wait on the engine: the role with the first token, then a token each,
    then the last token with the finish, the usage and ``[DONE]`` (one write each)."""
    deltas = [Delta(" quick", 4, 2), Delta(" brown", 4, 3), Delta(" fox", 4, 4, "length")]

    async def rest() -> AsyncIterator[Delta]:
        for d in deltas:
            yield d

    async def collect() -> list[bytes]:
        job = Job("chat", "chatcmpl-1", 0, "m", include_usage=True, usage_comments=True)
        events = completion_events(job, Delta("the", 4, 1), rest(), RequestRecord("r"))
        return [chunk async for chunk in events]

    chunks = asyncio.run(collect())
    datas = [[e for e in c.split(b"\n") if e.startswith(b"data: ")] for c in chunks]
    assert [len(d) for d in datas] == [2, 1, 1, 4]
    assert b'"role":"assistant"' in datas[0][0] and b'"the"' in datas[0][1]
    assert b'" quick"' in datas[1][0] and b'" brown"' in datas[2][0]
    assert b'" fox"' in datas[3][0] and b'"finish_reason":"length"' in datas[3][1]
    assert b'"usage"' in datas[3][2] and datas[3][3] == b"data: [DONE]"
