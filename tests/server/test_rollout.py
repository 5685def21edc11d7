"""A changed deployment keeps its model served: the running worker answers until the one
with the new settings is ready, and finishes the requests it has."""

from __future__ import annotations

import time

import openai
import pytest

from tests.server._serve import Server
from tests.server.test_replicas import CHAT, LONG, ps, replica_of, wait_for

pytestmark = pytest.mark.server

HI = [{"role": "user", "content": "Hi"}]


def test_a_changed_deployment_is_served_throughout(server: Server, client: openai.OpenAI) -> None:
    before = replica_of(server, CHAT)
    stream = client.chat.completions.create(
        model=CHAT,
        messages=HI,
        max_tokens=300,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=LONG,
    )
    chunks = [next(iter(stream))]
    server.cli("deploy", CHAT, "--option", "max_prefill_tokens=1024")  # the worker reads it
    rolling = replica_of(server, CHAT)
    assert rolling["pid"] == before["pid"] and rolling["state"] == "ready"
    assert rolling["replacing"] is not None
    assert "serves until a worker with the new settings is ready" in server.cli("ps").stdout
    answered, deadline = 0, time.monotonic() + 120
    while replica_of(server, CHAT)["pid"] == before["pid"]:  # every request is answered
        reply = client.chat.completions.create(model=CHAT, messages=HI, max_tokens=2)
        assert reply.choices[0].message.content is not None
        answered += 1
        assert time.monotonic() < deadline, "the new worker did not take over"
    chunks += list(stream)  # begun on the old worker, it ends as it would have
    finished = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert [f for f in finished if f] == ["length"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 300
    after = replica_of(server, CHAT)
    assert (after["state"], after["replacing"]) == ("ready", None)
    assert after["restarts"] == before["restarts"]  # the replica's count goes on
    assert answered > 0
    server.cli("deploy", CHAT, "--clear", "max_prefill_tokens")  # back as it was, rolled out
    wait_for(
        lambda: (
            [(r["state"], r["replacing"]) for r in ps(server) if r["model"] == CHAT]
            == [("ready", None)]
            and replica_of(server, CHAT)["pid"] != after["pid"]
        ),
        timeout=120,
    )
