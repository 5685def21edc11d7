"""The worker when a request goes wrong: a client that leaves before its first token, input
no engine can take, an unexpected error, and the log of requests filling up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from _worker_fakes import FakeEngine, serve

from zhisuan.engines.base import EngineInfo
from zhisuan.engines.worker import create_app
from zhisuan.engines.worker._requests import RequestLog

MESSAGES = [{"role": "user", "content": "say something"}]


def _wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_a_stream_whose_client_leaves_while_queued_is_cancelled_at_once() -> None:
    # the engine takes 5 s to its first token: the request is queued behind others
    engine = FakeEngine("fake-chat", context_length=1000, eos_after=100, delay=5.0)
    app = create_app(lambda: engine, model_name="fake-chat", engine_kind="fake")
    with serve(app) as url:
        body = {"model": "fake-chat", "messages": MESSAGES, "stream": True}
        headers = {"X-Request-Id": "quitter"}
        with pytest.raises(httpx.ReadTimeout):  # the client gives up before any event
            httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=0.3)
        assert _wait_for(lambda: engine.aborted == ["quitter"], timeout=1.5)
        record = httpx.get(f"{url}/zhisuan/requests/quitter", params={"wait": 1}).json()
        assert (record["state"], record["completion_tokens"]) == ("cancelled", 0)
        assert _wait_for(lambda: httpx.get(f"{url}/health").json()["active"] == 0)


class _SlowUpstream:
    """A pass-through whose upstream takes 5 s to answer a stream."""

    def __init__(self) -> None:
        self.info = EngineInfo("fake-up", "upstream", "chat", 1000, "remote")
        self.closed_early: list[str] = []

    async def forward_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("not used")

    async def forward_stream(
        self, path: str, body: dict[str, Any], *, include_usage: bool
    ) -> AsyncIterator[bytes]:
        try:
            await asyncio.sleep(5.0)
            yield b"data: [DONE]\n\n"
        finally:
            self.closed_early.append(path)

    async def close(self) -> None:
        pass


def test_a_forwarded_stream_whose_client_leaves_before_its_first_event_is_closed() -> None:
    upstream = _SlowUpstream()
    app = create_app(lambda: upstream, model_name="fake-up", engine_kind="upstream")
    with serve(app) as url:
        body = {"model": "fake-up", "messages": MESSAGES, "stream": True}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/chat/completions", json=body, timeout=0.3)
        assert _wait_for(lambda: upstream.closed_early == ["/chat/completions"], timeout=1.5)
        assert _wait_for(lambda: httpx.get(f"{url}/health").json()["active"] == 0)


class _BrokenTemplate(FakeEngine):
    def render_chat(self, messages: list[dict[str, str]]) -> str:
        raise RuntimeError("a bug, not the client's fault")


def test_an_unexpected_error_is_a_503_without_internals() -> None:
    engine = _BrokenTemplate("fake-chat")
    app = create_app(lambda: engine, model_name="fake-chat", engine_kind="fake")
    with serve(app) as url:
        body = {"model": "fake-chat", "messages": MESSAGES}
        resp = httpx.post(f"{url}/v1/chat/completions", json=body)
    assert resp.status_code == 503
    assert resp.json()["error"]["code"] == "engine_unavailable"
    assert "a bug" not in resp.text


@pytest.mark.parametrize(
    ("path", "raw", "param"),
    [
        (
            "/v1/chat/completions",
            b'{"model":"fake-chat","messages":[{"role":"user","content":"hi \\ud800"}]}',
            "messages[0].content",
        ),
        ("/v1/completions", b'{"model":"fake-chat","prompt":"\\udc00 hi"}', "prompt"),
        ("/v1/completions", b'{"model":"fake-chat","prompt":"hi","stop":"\\ud800"}', "stop"),
        (
            "/v1/completions",
            b'{"model":"fake-chat","prompt":"hi","seed":18446744073709551616}',
            "seed",
        ),
    ],
)
def test_input_no_engine_can_take_is_a_400(
    chat_url: str, path: str, raw: bytes, param: str
) -> None:
    headers = {"content-type": "application/json"}
    resp = httpx.post(f"{chat_url}{path}", content=raw, headers=headers)
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == param


def test_the_request_log_drops_settled_records_before_running_ones() -> None:
    async def scenario() -> None:
        log = RequestLog(capacity=4)
        running = log.start("long-stream")
        for i in range(4):
            log.start(f"short-{i}").end("finished")
        assert await log.settled("long-stream", 0) is running
        assert await log.settled("short-0", 0) is None  # the oldest settled one went
        assert await log.settled("short-3", 0) is not None
        running.end("cancelled")  # settles: now the newest settled record
        for i in range(4, 7):
            log.start(f"short-{i}").end("finished")
        assert await log.settled("long-stream", 0) is running
        log.start("short-7")
        assert await log.settled("long-stream", 0) is None
        assert log.totals["generations"] == 8

    asyncio.run(scenario())


def test_the_request_log_keeps_running_records_when_they_are_all_it_has() -> None:
    async def scenario() -> None:
        log = RequestLog(capacity=2)
        first, second = log.start("a"), log.start("b")
        third = log.start("c")  # only running records: the oldest goes
        assert await log.settled("a", 0) is None
        first.end("finished")  # dropped already: counted, not kept
        assert await log.settled("a", 0) is None
        assert await log.settled("b", 0) is second and await log.settled("c", 0) is third
        again = log.start("b")  # the same id again: the newer record replaces the older
        second.end("finished")
        assert await log.settled("b", 0) is again

    asyncio.run(scenario())
