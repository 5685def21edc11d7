"""Deployments persist across restarts of ``zhisuan serve``; stopping it ends requests in
flight within its grace period, each metered."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.server._serve import Server, start_server

pytestmark = pytest.mark.server


def test_deployments_come_back_after_restart(tmp_path_factory: pytest.TempPathFactory) -> None:
    home = tmp_path_factory.mktemp("lifecycle")
    first = start_server(home, "--demo")
    try:
        first.wait_ready(timeout=120)
        # the home knows its gateway's address: a command without ZHISUAN_PORT finds it
        written = json.loads((home / "gateway.json").read_text())
        assert written == {"url": first.url, "pid": first.proc.pid}
        unaddressed = {k: v for k, v in first.env.items() if k != "ZHISUAN_PORT"}
        deployed = subprocess.run(
            [sys.executable, "-m", "zhisuan", "deploy", "zhisuan-tiny-chat", "--replicas", "2"],
            env=unaddressed,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert "warning" not in deployed.stderr
        deadline = time.monotonic() + 120
        while len(json.loads(first.cli("ps", "--json").stdout)) < 4:  # the second replica
            assert time.monotonic() < deadline, "the gateway was not told of the deployment"
            time.sleep(0.2)
    finally:
        first.stop()
    assert not (home / "gateway.json").exists()
    rows = json.loads(first.cli("ps", "--json").stdout)
    assert [r["state"] for r in rows if r["model"] == "zhisuan-tiny-chat"] == ["stopped"] * 2
    second = start_server(home)  # no --demo: everything comes from the store
    try:
        second.wait_ready(timeout=120)  # one replica of each model is ready
        deadline = time.monotonic() + 120
        while True:
            rows = json.loads(second.cli("ps", "--json").stdout)
            chat = [r for r in rows if r["model"] == "zhisuan-tiny-chat"]
            if all(r["state"] == "ready" for r in chat) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(chat) == 2 and all(r["state"] == "ready" for r in chat)
        with openai.OpenAI(base_url=f"{second.url}/v1", api_key="x", max_retries=0) as client:
            resp = client.completions.create(model="zhisuan-tiny-chat", prompt="GPU", max_tokens=4)
        assert resp.choices[0].text is not None
    finally:
        second.stop()


CHAT = "zhisuan-tiny-chat"
HI = [{"role": "user", "content": "Hi"}]
LONG: dict[str, Any] = {"max_tokens": 480, "extra_body": {"ignore_eos": True}}


def _stopping(home: Path, grace_s: int) -> tuple[Server, openai.OpenAI, Any, Any]:
    """A server stopped (SIGTERM) while a stream and a whole answer are being generated."""
    srv = start_server(home, "--demo", env={"ZHISUAN_SHUTDOWN_TIMEOUT_S": str(grace_s)})
    srv.wait_ready(timeout=120)
    client = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="x", max_retries=0, timeout=60)
    with ThreadPoolExecutor(2) as warm:  # two pooled worker connections: the whole answer
        list(warm.map(lambda _: client.completions.create(model=CHAT, prompt="x"), range(2)))
    stream = iter(client.chat.completions.create(model=CHAT, messages=HI, stream=True, **LONG))
    next(stream)  # generating
    whole = ThreadPoolExecutor(1).submit(
        client.chat.completions.create, model=CHAT, messages=HI, **LONG
    )
    time.sleep(0.2)
    srv.proc.send_signal(signal.SIGTERM)
    return srv, client, stream, whole


def test_a_stopping_gateway_lets_requests_finish_within_its_grace_period(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    srv, client, stream, whole = _stopping(tmp_path_factory.mktemp("grace"), grace_s=20)
    try:
        assert sum(1 for _ in stream) > 0
        assert whole.result(timeout=30).usage.completion_tokens == 480
        assert srv.proc.wait(timeout=30) is not None
    finally:
        client.close()
        srv.stop()
    rows = json.loads(srv.cli("usage", "--json").stdout)
    assert sorted(r["completion_tokens"] for r in rows if r["status"] == "ok")[-2:] == [480, 480]


def test_a_stopping_gateway_ends_requests_past_its_grace_period_each_metered_and_told(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    srv, client, stream, whole = _stopping(tmp_path_factory.mktemp("stop"), grace_s=0)
    try:
        with pytest.raises(openai.APIError, match="gateway is stopping"):  # an error event
            for _ in stream:
                pass
        with pytest.raises(openai.InternalServerError) as info:
            whole.result(timeout=30)
        assert info.value.status_code == 503
        assert isinstance(info.value.body, dict) and info.value.body["code"] == "gateway_stopping"
        assert srv.proc.wait(timeout=30) is not None
    finally:
        client.close()
        srv.stop()
    _both_ended_and_metered(srv)
    assert "Traceback" not in srv.log.read_text()


def test_a_second_signal_skips_the_grace_period_not_the_metering(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    srv, client, stream, whole = _stopping(tmp_path_factory.mktemp("twice"), grace_s=30)
    try:
        time.sleep(0.05)
        srv.proc.send_signal(signal.SIGINT)  # a second signal: no grace period
        with pytest.raises(openai.APIError):  # told why, or the connection closes first
            for _ in stream:
                pass
        with pytest.raises(openai.APIError):
            whole.result(timeout=30)
        assert srv.proc.wait(timeout=30) is not None
    finally:
        client.close()
        srv.stop()
    _both_ended_and_metered(srv)
    log = srv.log.read_text()
    assert "stopped at once" in log and "Traceback" not in log


def _both_ended_and_metered(srv: Server) -> None:
    """The stream and the whole answer each have an error record with the worker's count of
    what it generated before it was cancelled."""
    cut = [r for r in json.loads(srv.cli("usage", "--json").stdout) if r["status"] != "ok"]
    assert [(r["status"], r["http_status"]) for r in cut] == [("error", 503)] * 2
    assert all(0 < r["completion_tokens"] < 480 for r in cut), cut
