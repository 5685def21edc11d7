"""A request without ``max_tokens`` to a deployment that sets no ``context_length`` stops
where the gateway's reservation does (``UNKNOWN_CONTEXT_COMPLETION``), on a local engine and
through the ``upstream`` engine alike; one that states its budget is left as it is."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _worker_fakes import FakeEngine, serve
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from zhisuan.engines.base import Delta
from zhisuan.engines.options import UNKNOWN_CONTEXT_COMPLETION, completion_cap
from zhisuan.engines.upstream import load
from zhisuan.engines.worker import __main__ as worker_main
from zhisuan.engines.worker import create_app
from zhisuan.protocol import SamplingParams

MESSAGES = [{"role": "user", "content": "write a long novel"}]
LONG = 3 * UNKNOWN_CONTEXT_COMPLETION  # a model whose own context is far longer


class _Recording(FakeEngine):
    """A fake engine that remembers the completion budget of each generation."""

    def __init__(self) -> None:
        super().__init__("m", context_length=LONG, eos_after=1)
        self.budgets: list[int] = []

    async def generate(
        self, prompt: str, params: SamplingParams, request_id: str
    ) -> AsyncIterator[Delta]:
        self.budgets.append(params.max_tokens)
        async for delta in super().generate(prompt, params, request_id):
            yield delta


def test_the_deployments_options_decide_the_cap() -> None:
    assert completion_cap({}) == UNKNOWN_CONTEXT_COMPLETION
    assert completion_cap({"base_url": "http://x/v1"}) == UNKNOWN_CONTEXT_COMPLETION
    assert completion_cap({"context_length": 32_768}) is None


@pytest.mark.parametrize(
    ("options", "stated", "budget"),
    [
        ({}, None, UNKNOWN_CONTEXT_COMPLETION),
        ({}, 5000, 5000),  # stated: the engine's context is the only bound
        ({"context_length": LONG}, None, LONG - 6),  # the rest of the context
    ],
)
def test_a_local_engine_stops_where_the_gateway_reserved(
    options: dict[str, Any], stated: int | None, budget: int
) -> None:
    engine = _Recording()
    app = create_app(
        lambda: engine, model_name="m", engine_kind="fake", completion_cap=completion_cap(options)
    )
    body: dict[str, Any] = {"model": "m", "messages": MESSAGES}
    if stated is not None:
        body["max_tokens"] = stated
    with serve(app) as url:
        assert httpx.post(f"{url}/v1/chat/completions", json=body).status_code == 200
        streamed = httpx.post(f"{url}/v1/chat/completions", json={**body, "stream": True})
        assert streamed.status_code == 200
    assert engine.budgets == [budget, budget]


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """An OpenAI-compatible 'upstream' that records the bodies it is sent."""
    seen: list[dict[str, Any]] = []
    app = FastAPI()
    usage = {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.post("/v1/chat/completions")
    @app.post("/v1/completions")
    async def answer(request: Request) -> Response:
        body = await request.json()
        seen.append(body)
        head = {"id": "x", "created": 0, "model": body["model"]}
        if body.get("stream"):
            delta = {"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}
            chunks = [{**head, "choices": [delta]}, {**head, "choices": [], "usage": usage}]
            events = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks)
            return Response(events + "data: [DONE]\n\n", media_type="text/event-stream")
        message = {"role": "assistant", "content": "hi"}
        choice = {"index": 0, "message": message, "text": "hi", "finish_reason": "stop"}
        return JSONResponse({**head, "choices": [choice], "usage": usage})

    with serve(app) as url:
        yield url, seen


@pytest.mark.parametrize(
    ("path", "options", "body", "sent"),
    [
        ("chat/completions", {}, {"messages": MESSAGES}, UNKNOWN_CONTEXT_COMPLETION),
        ("chat/completions", {}, {"messages": MESSAGES, "max_tokens": 7}, 7),
        ("chat/completions", {}, {"messages": MESSAGES, "max_completion_tokens": 9}, None),
        ("chat/completions", {"context_length": LONG}, {"messages": MESSAGES}, None),
        ("completions", {}, {"prompt": "once", "max_tokens": None}, 16),  # null: the default
        ("completions", {"context_length": LONG}, {"prompt": "once"}, 16),  # the default
    ],
)
def test_the_upstream_is_sent_the_budget_the_gateway_reserved(
    upstream: tuple[str, list[dict[str, Any]]],
    path: str,
    options: dict[str, Any],
    body: dict[str, Any],
    sent: int | None,
) -> None:
    base, seen = upstream
    options = {**options, "base_url": f"{base}/v1", "check": False}
    app = create_app(
        lambda: load(None, model_name="public", device="cpu", options=options),
        model_name="public",
        engine_kind="upstream",
        completion_cap=completion_cap(options),
    )
    body = {**body, "model": "public"}
    seen.clear()
    with serve(app) as url:
        for stream in (False, True):
            resp = httpx.post(f"{url}/v1/{path}", json={**body, "stream": stream})
            assert resp.status_code == 200, resp.text
    assert [s.get("max_tokens") for s in seen] == [sent, sent]
    assert [s.get("max_completion_tokens") for s in seen] == [body.get("max_completion_tokens")] * 2


def test_the_worker_process_caps_where_its_options_set_no_context(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``python -m zhisuan.engines.worker`` reads the cap from its ``--options``."""
    caps: list[int | None] = []

    def app(loader: Any, **kwargs: Any) -> FastAPI:
        caps.append(kwargs["completion_cap"])
        return FastAPI()

    class Server:
        started = True

        def __init__(self, config: Any) -> None:
            pass

        def run(self, sockets: Any = None) -> None:
            pass

    monkeypatch.setattr(worker_main, "create_app", app)
    monkeypatch.setattr(worker_main.uvicorn, "Server", Server)
    for options in ({}, {"context_length": LONG}):
        args = ["--engine", "upstream", "--model-name", "m", "--port", "1"]
        assert worker_main.main([*args, "--options", json.dumps(options)]) == 0
    assert caps == [UNKNOWN_CONTEXT_COMPLETION, None]
