"""Budgets on a model billed by device time, against a real ``zhisuan serve``: 64 concurrent
requests never overshoot, and a request past its reserved time is ended and billed for it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.server._serve import Server, start_server
from tests.server._share_cli import demo_path, tenant, wait_usage

pytestmark = pytest.mark.server

CHAT = "hourly-chat"
ADMIN = "zs-test-admin-key-device-budget"
DEADLINE_S = 0.3  # the longest a request may run under a budget; one unit of money a second


@pytest.fixture(scope="module")
def hourly(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # the deployment's own deadline wins over the setting's
    env = {"ZHISUAN_ADMIN_KEY": ADMIN, "ZHISUAN_BUDGET_DEADLINE_S": "60"}
    srv = start_server(tmp_path_factory.mktemp("hourly"), "--auth", "on", env=env)
    try:
        srv.wait_ready(timeout=60)
        srv.cli("models", "import", demo_path(srv, "tiny_chat_dir"), "--name", CHAT)
        srv.cli("deploy", CHAT, "--cost-per-hour", "3600", "--deadline-s", str(DEADLINE_S))
        srv.wait_ready(timeout=120)
        yield srv
    finally:
        srv.stop()


def test_64_concurrent_requests_stay_within_the_budget(hourly: Server) -> None:
    budget = 0.4  # one request's reserved time at once; unreserved, 64 would spend about 1
    key = tenant(hourly, "hourly-team", "--budget", str(budget))

    async def main() -> list[int]:
        async with openai.AsyncOpenAI(
            base_url=f"{hourly.url}/v1", api_key=key, max_retries=0, timeout=60
        ) as ac:

            async def one() -> int:
                try:
                    await ac.chat.completions.create(
                        model=CHAT,
                        messages=[{"role": "user", "content": "Hi"}],
                        max_tokens=64,
                        extra_body={"ignore_eos": True},
                    )
                except openai.APIStatusError as err:
                    return err.status_code  # 429, or 504 for one ended at its deadline
                return 200

            return await asyncio.gather(*(one() for _ in range(64)))

    codes = asyncio.run(main())
    assert set(codes) <= {200, 429, 504}
    assert codes.count(429) >= 1 and len(codes) - codes.count(429) >= 1
    rows = wait_usage(hourly, "hourly-team", lambda r: len(r) == 64)
    assert len(rows) == 64
    assert sum(r["cost"] for r in rows) <= budget
    for r in rows:
        assert r["cost"] <= DEADLINE_S + 1e-9  # no request cost more than it reserved


def test_a_request_past_its_reserved_time_is_ended_and_billed_for_it(hourly: Server) -> None:
    key = tenant(hourly, "long-team", "--budget", "100")
    body = {
        "model": CHAT,
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 400,
        "stream": True,
        "ignore_eos": True,
    }
    headers = {"Authorization": f"Bearer {key}"}
    with (
        httpx.Client(timeout=30) as http,
        http.stream("POST", f"{hourly.url}/v1/chat/completions", json=body, headers=headers) as r,
    ):
        assert r.status_code == 200
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    last = json.loads(events[-1].removeprefix("data: "))
    assert last["error"]["code"] == "deadline_exceeded"
    (row,) = wait_usage(hourly, "long-team", lambda r: len(r) == 1)
    assert (row["status"], row["http_status"]) == ("error", 504)
    assert row["prompt_tokens"] > 0 and row["completion_tokens"] < 400
    assert 0 < row["cost"] <= DEADLINE_S + 1e-9
