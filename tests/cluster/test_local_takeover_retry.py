"""A request whose worker fails it after a successor took over that worker's replica (a
rollout) is tried again on the successor: the gateway skips the worker that failed, not the
replica's key (the gateway's proxy on the ``local`` backend's real workers; the meter is a
stand-in)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from _fake_workers import until

from zhisuan.cluster.base import ReplicaSpec, ReplicaState
from zhisuan.cluster.local import LocalBackend
from zhisuan.gateway._exchange import Exchange
from zhisuan.gateway._proxy import forward
from zhisuan.gateway._wire import Pool
from zhisuan.settings import Settings

pytestmark = pytest.mark.usefixtures("fake_workers")

SPEC = ReplicaSpec(model="fake", engine="_worker_fakes:load", device="cpu", model_path=None)
SLOW = replace(SPEC, options=(("fake", {"delay": 60.0}),))  # its request runs on
BODY = json.dumps(
    {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
).encode()
READY = ReplicaState.READY


def _gateway(backend: LocalBackend, client: aiohttp.ClientSession, sent: list[Any]) -> Any:
    meter = SimpleNamespace(
        start=lambda ex, r: None,
        prepare=lambda ex: None,
        abandon=lambda ex: None,
        stop_share=lambda ex: None,
    )
    finished: list[Exchange] = []

    async def send(message: Any) -> None:
        sent.append(message)

    return SimpleNamespace(
        backend=backend,
        wire=Pool(),
        meter=meter,
        client=client,
        finish=finished.append,
        finished=finished,
        send=send,
    )


async def _never() -> dict[str, Any]:
    await asyncio.Event().wait()  # the client stays
    raise AssertionError


async def _active(client: aiohttp.ClientSession, endpoint: str | None) -> int:
    async with client.get(f"{endpoint}/health") as resp:
        return int((await resp.json())["active"])


def test_a_request_the_old_worker_fails_after_a_takeover_goes_to_the_successor(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        backend = LocalBackend(Settings(home=tmp_path, shutdown_timeout_s=120))
        sent: list[Any] = []
        async with aiohttp.ClientSession() as client:
            gw = _gateway(backend, client, sent)
            try:
                await backend.apply([SLOW])
                await until(lambda: [r.state for r in backend.replicas()] == [READY])
                [old] = backend.replicas()
                ex = Exchange(request_id="r-1", endpoint="chat.completions", model="fake")
                request = asyncio.create_task(
                    forward(gw, "/v1/chat/completions", BODY, ex, _never, gw.send)
                )
                while await _active(client, old.endpoint) == 0:  # it runs on the old worker
                    assert not request.done()
                    await asyncio.sleep(0.01)
                await backend.apply([SPEC])  # a rollout: a successor takes over replica #0
                await until(lambda: backend.replicas()[0] is not old)
                [new] = backend.replicas()
                assert new.spec.key == old.spec.key and new.state is READY
                assert old.state is ReplicaState.DRAINING and old.pid is not None
                os.kill(old.pid, signal.SIGKILL)  # the old worker fails the request
                await request
                assert sent[0]["status"] == 200, sent
                assert gw.finished == [ex] and (ex.status, ex.http_status) == ("ok", 200)
                assert ex.completion_tokens == 2
                assert (old.outstanding, new.outstanding) == (0, 0)
            finally:
                gw.wire.close()
                await backend.stop()

    asyncio.run(scenario())
