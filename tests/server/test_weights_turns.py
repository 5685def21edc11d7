"""Weighted turns against a real ``zhisuan serve`` and its worker: a tenant of weight 3 (set
through the CLI) and one of weight 1, both with a backlog in a replica that runs one request
at a time, have their requests started three to one. With one slot a request ends before
the next starts, so the order they end in is the order they started in."""

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

ADMIN = "zs-test-admin-key-weights-00000"
MODEL = "weights-chat"
MESSAGES: list[Any] = [{"role": "user", "content": "Hi"}]
HEAVY, LIGHT = 6, 3  # queued behind the one running


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str, str]]:
    srv = start_server(
        tmp_path_factory.mktemp("weights"), "--auth", "on", env={"ZHISUAN_ADMIN_KEY": ADMIN}
    )
    try:
        srv.wait_ready(timeout=60)
        srv.cli("models", "import", demo_path(srv, "tiny_chat_dir"), "--name", MODEL)
        srv.cli("deploy", MODEL, "--max-batch", "1")
        srv.wait_ready(timeout=120)
        heavy = tenant(srv, "heavy", "--weight", "2")
        srv.cli("tenants", "set", "heavy", "--weight", "3")  # changed, as an operator would
        yield srv, heavy, tenant(srv, "light")
    finally:
        srv.stop()


def test_a_weight_3_tenant_has_three_requests_started_to_a_weight_1_tenants_one(
    shared: tuple[Server, str, str],
) -> None:
    srv, heavy, light = shared
    shown = json.loads(srv.cli("tenants", "list", "--json").stdout)
    assert {t["name"]: t["weight"] for t in shown} == {"heavy": 3, "light": 1}
    worker = _endpoint(srv)
    ended: list[str] = []

    async def one(ac: openai.AsyncOpenAI, who: str, tokens: int) -> None:
        await ac.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=tokens, extra_body={"ignore_eos": True}
        )
        ended.append(who)

    async def main() -> None:
        async with (
            openai.AsyncOpenAI(base_url=f"{srv.url}/v1", api_key=heavy, max_retries=0) as h,
            openai.AsyncOpenAI(base_url=f"{srv.url}/v1", api_key=light, max_retries=0) as l_,
        ):
            tasks = [asyncio.create_task(one(h, "first", 480))]  # holds the one slot ...
            await _state(worker, active=1, waiting=0)
            tasks += [asyncio.create_task(one(h, "h", 16)) for _ in range(HEAVY)]
            await _state(worker, active=1, waiting=HEAVY)  # ... while both backlogs queue
            tasks += [asyncio.create_task(one(l_, "l", 16)) for _ in range(LIGHT)]
            await _state(worker, active=1, waiting=HEAVY + LIGHT)
            await asyncio.wait_for(asyncio.gather(*tasks), 120)

    before = httpx.get(f"{worker}/health").json()["prefills"]
    asyncio.run(main())
    # one slot: every request joined the batch alone, in a prefill pass of its own
    assert httpx.get(f"{worker}/health").json()["prefills"] - before == 1 + HEAVY + LIGHT
    assert ended[0] == "first", ended
    # heavy's line opened first: three of its requests, then one of light's, in turn
    assert "".join(ended[1:]) == "hhhlhhhll", ended  # hhhl, hhhl, l


def _endpoint(srv: Server) -> str:
    rows = json.loads(srv.cli("ps", "--json").stdout)
    return str(next(r["endpoint"] for r in rows if r["model"] == MODEL))


async def _state(worker: str, *, active: int, waiting: int, timeout: float = 30) -> None:
    """Wait until the worker runs ``active`` requests with ``waiting`` queued."""
    deadline = time.monotonic() + timeout
    seen: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=5) as http:
        while time.monotonic() < deadline:
            seen = (await http.get(f"{worker}/health")).json()
            if (seen["active"], seen["waiting"]) == (active, waiting):
                return
            await asyncio.sleep(0.01)
    raise AssertionError(f"never {active} running and {waiting} waiting at {worker}: {seen}")
