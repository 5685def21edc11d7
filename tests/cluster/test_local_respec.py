"""A deployment whose change touches only what the gateway reads (a price) keeps its
running replicas; any other change starts new workers."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

from zhisuan import demo
from zhisuan.cluster.base import ReplicaSpec, ReplicaState
from zhisuan.cluster.local import LocalBackend
from zhisuan.settings import Settings

SPEC = ReplicaSpec(
    model="tiny",
    engine="transformers",
    device="cpu",
    model_path=str(demo.tiny_chat_dir()),
    options=(("max_batch_size", 4),),
)
PRICED = replace(SPEC, options=(*SPEC.options, ("price_input_per_mtok", 2.0), ("power_w", 30)))


def test_only_the_gateways_options_leave_a_worker_as_it_is() -> None:
    assert SPEC.runs_as(SPEC) and SPEC.runs_as(PRICED) and PRICED.runs_as(SPEC)
    assert SPEC.runs_as(replace(SPEC, options=(("budget_deadline_s", 60), *SPEC.options)))
    assert not SPEC.runs_as(replace(SPEC, options=(("max_batch_size", 8),)))
    assert not SPEC.runs_as(replace(PRICED, options=PRICED.options[1:]))  # the batch goes
    assert not SPEC.runs_as(replace(SPEC, device="cuda:0"))
    assert not SPEC.runs_as(replace(SPEC, model_path="/elsewhere"))


def test_a_specs_key_follows_its_model_and_index_only() -> None:
    """The key is made once, with the spec: a copy with another index or model has its
    own, and the key takes no part in comparing specs."""
    assert SPEC.key == "tiny#0" and PRICED.key == "tiny#0"
    assert replace(SPEC, index=3).key == "tiny#3"
    assert replace(SPEC, model="other", index=1).key == "other#1"
    assert replace(SPEC) == SPEC and hash(replace(SPEC)) == hash(SPEC)
    assert "key" not in repr(SPEC)


async def _ready_pid(backend: LocalBackend, other_than: int | None = None) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        [replica] = backend.replicas()
        if replica.state is ReplicaState.READY and replica.pid not in (None, other_than):
            return replica.pid
        await asyncio.sleep(0.05)
    raise TimeoutError("the replica did not become ready")


def test_a_new_price_keeps_the_worker_and_a_new_batch_size_replaces_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        backend = LocalBackend(Settings(home=tmp_path))
        try:
            await backend.apply([SPEC])
            first = await _ready_pid(backend)
            await backend.apply([PRICED])
            [replica] = backend.replicas()
            assert replica.spec == PRICED  # the gateway reads the new price from here
            assert (replica.pid, replica.state, replica.restarts) == (first, ReplicaState.READY, 0)
            bigger = replace(PRICED, options=(("max_batch_size", 8), *PRICED.options[1:]))
            await backend.apply([bigger])
            await _ready_pid(backend, other_than=first)  # a new worker took over
        finally:
            await backend.stop()

    asyncio.run(scenario())
