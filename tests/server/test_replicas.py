"""Replica supervision: ps, worker crash mid-stream, client disconnect, deploy/undeploy."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import httpx
import openai
import pytest

from tests.server._serve import Server
from zhisuan.cluster import cores

pytestmark = pytest.mark.server

CHAT = "zhisuan-tiny-chat"
LONG = {"ignore_eos": True}


def ps(server: Server) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(server.cli("ps", "--json").stdout)
    return rows


def replica_of(server: Server, model: str) -> dict[str, Any]:
    """The replica's row, from the admin API (``zhisuan ps --json`` gives the same rows)."""
    rows = httpx.get(f"{server.url}/admin/replicas", timeout=10).json()
    return next(r for r in rows if r["model"] == model)


def wait_for(predicate: Any, timeout: float, step: float = 0.1) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(step)
    raise TimeoutError(f"condition not met in {timeout}s")


def test_ps_lists_every_replica_with_its_fields(server: Server) -> None:
    rows = ps(server)
    api = httpx.get(f"{server.url}/admin/replicas").json()
    assert [(r["model"], r["pid"]) for r in rows] == [(r["model"], r["pid"]) for r in api]
    assert {r["model"] for r in rows} >= {CHAT, "minilm-embed"}
    for row in rows:
        assert {"model", "state", "pid", "device", "endpoint", "uptime_s", "restarts"} <= set(row)
    chat = replica_of(server, CHAT)
    assert chat["state"] == "ready"
    assert chat["device"] == "cpu"
    assert chat["endpoint"].startswith("http://127.0.0.1:")
    assert isinstance(chat["pid"], int)
    table = server.cli("ps").stdout
    assert CHAT in table and "ready" in table


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs Linux and two cores (on one core nothing is pinned)",
)
def test_the_gateway_keeps_a_core_and_cpu_replicas_run_on_the_others(server: Server) -> None:
    layout = cores.plan("auto")
    assert layout is not None
    assert os.sched_getaffinity(server.proc.pid) == layout.gateway
    rows = httpx.get(f"{server.url}/admin/replicas", timeout=10).json()
    cpu_rows = [r for r in rows if r["device"] == "cpu" and r["state"] == "ready"]
    assert cpu_rows
    for row in cpu_rows:
        assert row["cpus"], row
        assert not set(row["cpus"]) & layout.gateway
        for tid in os.listdir(f"/proc/{row['pid']}/task"):  # torch's threads included
            assert os.sched_getaffinity(int(tid)) == set(row["cpus"])
    listed = {(r["model"], r["replica"]): r["cpus"] for r in ps(server)}
    assert all(listed[(r["model"], r["replica"])] == r["cpus"] for r in cpu_rows)


def test_killed_worker_errors_the_stream_and_comes_back(
    server: Server, client: openai.OpenAI
) -> None:
    before = replica_of(server, CHAT)
    stream = client.chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": "Count to one thousand."}],
        max_tokens=450,
        stream=True,
        extra_body=LONG,
    )
    first = next(iter(stream))
    assert first.choices
    os.kill(before["pid"], signal.SIGKILL)
    killed_at = time.monotonic()
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass
    assert time.monotonic() - killed_at < 10, "the client must get an error, not a hang"

    def back() -> bool:
        row = replica_of(server, CHAT)
        return row["state"] == "ready" and row["pid"] != before["pid"]

    wait_for(back, timeout=10, step=0.05)
    after = replica_of(server, CHAT)
    assert after["restarts"] == before["restarts"] + 1
    resp = client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert resp.choices[0].message.content is not None


def test_client_disconnect_frees_the_slot(server: Server) -> None:
    endpoint = replica_of(server, CHAT)["endpoint"]
    body = {
        "model": CHAT,
        "messages": [{"role": "user", "content": "Count to one thousand."}],
        "max_tokens": 450,
        "stream": True,
        "ignore_eos": True,
    }
    with (
        httpx.Client(timeout=30) as http,
        http.stream("POST", f"{server.url}/v1/chat/completions", json=body) as resp,
    ):
        request_id = resp.headers["x-request-id"]
        for _ in resp.iter_lines():
            break
    record = httpx.get(
        f"{endpoint}/zhisuan/requests/{request_id}", params={"wait": 5}, timeout=10
    ).json()
    assert record["state"] == "cancelled"
    assert record["completion_tokens"] < 450
    wait_for(lambda: httpx.get(f"{endpoint}/health").json()["active"] == 0, timeout=5)


def test_answers_through_the_gateway_carry_the_workers_time(server: Server) -> None:
    body = {"model": CHAT, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
    with httpx.Client(timeout=60) as http:
        started = time.perf_counter()
        whole = http.post(f"{server.url}/v1/chat/completions", json=body)
        elapsed_ms = (time.perf_counter() - started) * 1e3
        name, _, dur = whole.headers["server-timing"].partition(";dur=")
        assert name == "worker" and 0 < float(dur) <= elapsed_ms
        stream = http.post(f"{server.url}/v1/chat/completions", json={**body, "stream": True})
    comment, done = stream.text.split("\n\n")[-2].split("\n")
    assert done == "data: [DONE]" and comment.startswith(": server-timing worker;dur=")


def test_deploy_and_undeploy_while_serving(server: Server) -> None:
    out = server.cli("deploy", "zhisuan-tiny-chat-copy", check=False)
    assert out.returncode == 2
    assert "not found" in out.stderr and "Traceback" not in out.stderr
    server.cli("deploy", CHAT, "--replicas", "2")
    wait_for(
        lambda: sum(r["state"] == "ready" for r in ps(server) if r["model"] == CHAT) == 2,
        timeout=60,
    )
    server.cli("deploy", CHAT, "--replicas", "1")
    wait_for(lambda: sum(r["model"] == CHAT for r in ps(server)) == 1, timeout=30)
    wait_for(lambda: replica_of(server, CHAT)["state"] == "ready", timeout=60)


def test_engine_failure_is_503(server: Server, client: openai.OpenAI) -> None:
    server.cli(
        "deploy", "dead-upstream", "--engine", "upstream", "--upstream-url", "http://127.0.0.1:9/v1"
    )
    try:

        def failed() -> bool:
            row = replica_of(server, "dead-upstream")
            return row["restarts"] >= 1 and "unreachable" in (row["last_error"] or "")

        wait_for(failed, timeout=30)
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(
                model="dead-upstream", messages=[{"role": "user", "content": "Hi"}]
            )
        assert info.value.status_code == 503
        assert info.value.code == "engine_unavailable"
    finally:
        server.cli("undeploy", "dead-upstream")
