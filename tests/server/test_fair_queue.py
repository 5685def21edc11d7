"""Tenants take turns in a replica's queue, against a real ``zhisuan serve``: a tenant's one
request, queued behind another tenant's backlog, starts at the next free slot; with
``--queue fifo`` it waits for the whole backlog."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.server._serve import Server, start_server
from tests.server._share_cli import demo_path, tenant

pytestmark = pytest.mark.server

ADMIN = "zs-test-admin-key-fair-queue-000"
FAIR, FIFO = "turns-chat", "fifo-chat"
BACKLOG = 6
MESSAGES: list[Any] = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str, str]]:
    srv = start_server(
        tmp_path_factory.mktemp("fair"), "--auth", "on", env={"ZHISUAN_ADMIN_KEY": ADMIN}
    )
    try:
        srv.wait_ready(timeout=60)
        path = demo_path(srv, "tiny_chat_dir")
        for name, order in ((FAIR, "fair"), (FIFO, "fifo")):
            srv.cli("models", "import", path, "--name", name)
            srv.cli("deploy", name, "--max-batch", "1", "--queue", order)
        srv.wait_ready(timeout=120)
        yield srv, tenant(srv, "bulk"), tenant(srv, "small")
    finally:
        srv.stop()


@pytest.mark.parametrize("model", [FAIR, FIFO])
def test_a_tenants_request_waits_for_its_turn_not_for_another_tenants_backlog(
    shared: tuple[Server, str, str], model: str
) -> None:
    srv, bulk, small = shared
    worker = _endpoint(srv, model)
    ended: list[str] = []

    async def one(ac: openai.AsyncOpenAI, who: str, tokens: int) -> None:
        await ac.chat.completions.create(
            model=model, messages=MESSAGES, max_tokens=tokens, extra_body={"ignore_eos": True}
        )
        ended.append(who)

    async def main() -> None:
        async with (
            openai.AsyncOpenAI(base_url=f"{srv.url}/v1", api_key=bulk, max_retries=0) as b,
            openai.AsyncOpenAI(base_url=f"{srv.url}/v1", api_key=small, max_retries=0) as s,
        ):
            tasks = [asyncio.create_task(one(b, f"bulk{i}", 480)) for i in range(BACKLOG)]
            await _waiting(worker, BACKLOG - 1)  # one runs in the replica's one slot
            if model == FAIR:
                await _gateway_sees_the_queue(srv, model)
            tasks.append(asyncio.create_task(one(s, "small", 8)))
            await asyncio.wait_for(asyncio.gather(*tasks), 60)

    before = httpx.get(f"{worker}/health").json()["prefills"]
    asyncio.run(main())
    # one slot: every request joined the batch alone, in a prefill pass of its own
    assert httpx.get(f"{worker}/health").json()["prefills"] - before == BACKLOG + 1
    assert sorted(ended) == sorted([*(f"bulk{i}" for i in range(BACKLOG)), "small"])
    if model == FAIR:  # next but one, or two if the first ended before it came
        assert ended.index("small") in (1, 2), ended
    else:
        assert ended[-1] == "small", ended


def _endpoint(srv: Server, model: str) -> str:
    rows = json.loads(srv.cli("ps", "--json").stdout)
    return str(next(r["endpoint"] for r in rows if r["model"] == model))


async def _waiting(worker: str, n: int, timeout: float = 20) -> None:
    """Wait until ``n`` requests wait in the worker's queue."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=5) as http:
        while time.monotonic() < deadline:
            if (await http.get(f"{worker}/health")).json()["waiting"] == n:
                return
            await asyncio.sleep(0.01)
    raise AssertionError(f"never {n} requests waiting at {worker}")


async def _gateway_sees_the_queue(srv: Server, model: str) -> None:
    """The gateway's /metrics has the replica's queue as its worker counts it: one request
    running and the rest waiting (one fewer if the first has ended meanwhile), not every
    request in flight that has no first token yet."""
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(f"{srv.url}/metrics")).text
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("zhisuan_") and f'model="{model}"' in line
    }
    queued = samples[f'zhisuan_requests_queued{{model="{model}"}}']
    assert queued in (BACKLOG - 1, BACKLOG - 2), samples
    assert samples[f'zhisuan_requests_in_flight{{model="{model}"}}'] == queued + 1
    labels = f'model="{model}",replica="0"'
    assert samples[f'zhisuan_replica_requests{{{labels},state="running"}}'] == 1
    assert samples[f'zhisuan_replica_requests{{{labels},state="waiting"}}'] == queued
