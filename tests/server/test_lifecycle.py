"""Deployments persist across restarts of ``zhisuan serve``."""

from __future__ import annotations

import json
import time

import openai
import pytest

from tests.server._serve import start_server

pytestmark = pytest.mark.server


def test_deployments_come_back_after_restart(tmp_path_factory: pytest.TempPathFactory) -> None:
    home = tmp_path_factory.mktemp("lifecycle")
    first = start_server(home, "--demo")
    try:
        first.wait_ready(timeout=120)
        first.cli("deploy", "zhisuan-tiny-chat", "--replicas", "2")
    finally:
        first.stop()
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
