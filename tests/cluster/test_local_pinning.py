"""The local backend starts CPU workers on their slice and moves them when replicas change."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from zhisuan import demo
from zhisuan.cluster.base import ReplicaSpec
from zhisuan.cluster.cores import CoreLayout
from zhisuan.cluster.local import LocalBackend
from zhisuan.settings import Settings

pytestmark = pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs Linux and two cores",
)


def spec(index: int) -> ReplicaSpec:
    return ReplicaSpec(
        model="tiny",
        engine="transformers",
        device="cpu",
        model_path=str(demo.tiny_chat_dir()),
        index=index,
    )


async def pid_of(backend: LocalBackend, key: str) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = [r.pid for r in backend.replicas() if r.spec.key == key and r.pid]
        if found:
            return found[0]
        await asyncio.sleep(0.02)
    raise TimeoutError(f"{key} did not start")


def test_workers_start_on_their_slice_and_move_when_a_replica_joins(tmp_path: Path) -> None:
    a, b = sorted(os.sched_getaffinity(0))[:2]
    layout = CoreLayout(gateway=frozenset({a}), workers=(a, b), every=frozenset({a, b}))

    async def scenario() -> None:
        backend = LocalBackend(Settings(home=tmp_path), layout)
        try:
            await backend.apply([spec(0)])
            first = await pid_of(backend, "tiny#0")
            assert os.sched_getaffinity(first) == {a, b}
            await backend.apply([spec(0), spec(1)])
            second = await pid_of(backend, "tiny#1")
            assert await pid_of(backend, "tiny#0") == first, "moved, not restarted"
            for tid in os.listdir(f"/proc/{first}/task"):
                assert os.sched_getaffinity(int(tid)) == {a}
            assert os.sched_getaffinity(second) == {b}
            rows = {r.spec.key: r.snapshot()["cpus"] for r in backend.replicas()}
            assert rows == {"tiny#0": [a], "tiny#1": [b]}
        finally:
            await backend.stop()

    asyncio.run(scenario())
