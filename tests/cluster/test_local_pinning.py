"""The local backend puts CPU workers on their slice (after loading on every core while the
platform starts) and moves them when replicas change."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from zhisuan import demo
from zhisuan.cluster.base import ReplicaSpec, ReplicaState
from zhisuan.cluster.cores import CPUS_ENV, CoreLayout
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


async def ready(backend: LocalBackend, key: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(r.spec.key == key and r.state is ReplicaState.READY for r in backend.replicas()):
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{key} did not become ready")


def threads_on(pid: int) -> set[frozenset[int]]:
    return {frozenset(os.sched_getaffinity(int(t))) for t in os.listdir(f"/proc/{pid}/task")}


def _run(tmp_path: Path, workers: int, scenario: Any) -> None:
    """``scenario(backend, a, b)`` with the gateway on core ``a`` and CPU replicas dealt
    ``(b,)`` (``workers=1``) or ``(a, b)`` (``workers=2``)."""
    a, b = sorted(os.sched_getaffinity(0))[:2]
    dealt = (b,) if workers == 1 else (a, b)
    layout = CoreLayout(gateway=frozenset({a}), workers=dealt, every=frozenset({a, b}))

    async def main() -> None:
        backend = LocalBackend(Settings(home=tmp_path), layout)
        try:
            await scenario(backend, a, b)
        finally:
            await backend.stop()

    asyncio.run(main())


def test_workers_load_on_every_core_at_start_then_compute_on_their_slice(tmp_path: Path) -> None:
    async def scenario(backend: LocalBackend, a: int, b: int) -> None:
        await backend.apply([spec(0)])
        first = await pid_of(backend, "tiny#0")
        # nothing is served yet: it imports and loads on every core, the gateway's too...
        assert os.sched_getaffinity(first) == {a, b}
        environ = Path(f"/proc/{first}/environ").read_bytes().split(b"\0")
        assert f"{CPUS_ENV}={b}".encode() in environ
        await ready(backend, "tiny#0")
        # ...and computes on its slice once loaded, every thread (torch's too)
        assert threads_on(first) == {frozenset({b})}
        await backend.apply([spec(0), spec(1)])
        second = await pid_of(backend, "tiny#1")
        # a replica serves now: the new worker starts on its slice, never the gateway's core
        assert os.sched_getaffinity(second) == {b}
        await ready(backend, "tiny#1")
        assert threads_on(second) == {frozenset({b})}

    _run(tmp_path, 1, scenario)


def test_workers_move_when_a_replica_joins_even_while_they_load(tmp_path: Path) -> None:
    async def scenario(backend: LocalBackend, a: int, b: int) -> None:
        await backend.apply([spec(0)])
        first = await pid_of(backend, "tiny#0")
        await backend.apply([spec(0), spec(1)])  # before tiny#0 is loaded
        await ready(backend, "tiny#0")
        await ready(backend, "tiny#1")
        assert await pid_of(backend, "tiny#0") == first, "moved, not restarted"
        # it was told {a, b} at its start and moved itself there once loaded; the
        # supervisor put it where the replicas stand now
        assert threads_on(first) == {frozenset({a})}
        assert threads_on(await pid_of(backend, "tiny#1")) == {frozenset({b})}
        rows = {r.spec.key: r.snapshot()["cpus"] for r in backend.replicas()}
        assert rows == {"tiny#0": [a], "tiny#1": [b]}
        await backend.apply([spec(0)])  # and back when it leaves
        assert threads_on(first) == {frozenset({a, b})}

    _run(tmp_path, 2, scenario)
