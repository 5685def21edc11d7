"""A changed deployment is rolled out replica by replica: a ready CPU replica serves until
its successor is ready, then finishes its own requests; a successor that cannot start leaves
the old worker serving; a GPU replica is replaced in place, one at a time."""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from _fake_workers import alive, until

from zhisuan.cluster.base import Replica, ReplicaSpec, ReplicaState
from zhisuan.cluster.local import LocalBackend
from zhisuan.settings import Settings

pytestmark = pytest.mark.usefixtures("fake_workers")

SPEC = ReplicaSpec(model="fake", engine="_worker_fakes:load", device="cpu", model_path=None)
SLOWER = replace(SPEC, options=(("fake", {"delay": 0.01}),))
BROKEN = replace(SPEC, options=(("fail", True),))
READY = ReplicaState.READY


def _only(backend: LocalBackend) -> Replica:
    [replica] = backend.replicas()
    return replica


async def _ready(backend: LocalBackend, count: int = 1) -> list[Replica]:
    await until(lambda: [r.state for r in backend.replicas()] == [READY] * count)
    return backend.replicas()


def test_a_ready_replica_serves_until_its_successor_takes_over(tmp_path: Path) -> None:
    async def scenario() -> None:
        backend = LocalBackend(Settings(home=tmp_path, shutdown_timeout_s=30))
        try:
            await backend.apply([SPEC])
            [old] = await _ready(backend)
            assert old.pid is not None
            os.kill(old.pid, signal.SIGKILL)  # one crash: the replica's count is 1
            await until(lambda: old.state is READY and old.restarts == 1)
            old_pid = old.pid
            assert old_pid is not None
            old.outstanding = 1  # a request in flight on it, as the gateway counts them
            await backend.apply([SLOWER])
            assert _only(backend) is old and old.state is READY  # still serving
            replacing = old.snapshot()["replacing"]
            assert replacing is not None and replacing["state"] == "starting"
            await until(lambda: _only(backend) is not old)
            new = _only(backend)
            assert (new.state, new.spec, new.restarts) == (READY, SLOWER, 1)  # goes on
            assert new.pid not in (None, old_pid)
            assert old.snapshot()["replacing"] is None
            await asyncio.sleep(0.5)
            assert alive(old_pid)  # its request is not done yet
            old.outstanding = 0
            await until(lambda: old.state is ReplicaState.STOPPED)
            assert not alive(old_pid)
        finally:
            await backend.stop()

    asyncio.run(scenario())


def test_a_successor_that_cannot_start_leaves_the_old_worker_serving(tmp_path: Path) -> None:
    async def scenario() -> None:
        backend = LocalBackend(Settings(home=tmp_path, restart_backoff_s=0.1))
        try:
            await backend.apply([SPEC])
            [old] = await _ready(backend)
            old_pid = old.pid
            await backend.apply([BROKEN])
            await until(lambda: old.successor is not None and old.successor.restarts >= 2)
            replacing = old.snapshot()["replacing"]
            assert replacing is not None
            why = "error: cannot load model fake: RuntimeError: the weights are broken"
            assert replacing["last_error"] == why  # the worker's own line, no log prefix
            assert _only(backend) is old
            assert (old.state, old.pid, old.spec) == (READY, old_pid, SPEC)
            successor = old.successor
            await backend.apply([SPEC])  # the change is undone: the successor goes
            assert old.successor is None and successor.pid is None
            assert _only(backend) is old and old.pid == old_pid
        finally:
            await backend.stop()

    asyncio.run(scenario())


def test_replicas_are_replaced_one_at_a_time(tmp_path: Path) -> None:
    """Two CPU replicas surge one after the other, both serving throughout; two GPU
    replicas (here fakes that never touch a GPU) stop in turn, one always serving."""

    async def scenario(spec: ReplicaSpec, changed: ReplicaSpec, home: Path) -> None:
        backend = LocalBackend(Settings(home=home))
        specs = [replace(spec, index=i) for i in range(2)]
        try:
            await backend.apply(specs)
            before = {r.pid for r in await _ready(backend, 2)}
            wanted = [replace(changed, index=i) for i in range(2)]
            await backend.apply(wanted)
            serving: list[int] = []
            while [r.spec for r in backend.replicas()] != wanted:
                replicas = backend.replicas()
                serving.append(sum(r.state is READY for r in replicas))
                assert sum(r.successor is not None for r in replicas) <= 1
                await asyncio.sleep(0.02)
            after = {r.pid for r in await _ready(backend, 2)}
            assert not before & after
            assert min(serving) == (2 if spec.device == "cpu" else 1), serving
        finally:
            await backend.stop()

    asyncio.run(scenario(SPEC, SLOWER, tmp_path / "cpu"))
    gpu = replace(SPEC, device="cuda:0")
    asyncio.run(scenario(gpu, replace(SLOWER, device="cuda:0"), tmp_path / "gpu"))


def test_a_replica_scaled_away_finishes_its_requests_first(tmp_path: Path) -> None:
    async def scenario() -> None:
        backend = LocalBackend(Settings(home=tmp_path, shutdown_timeout_s=30))
        try:
            await backend.apply([SPEC, replace(SPEC, index=1)])
            first, second = await _ready(backend, 2)
            pid = second.pid
            assert pid is not None
            second.outstanding = 1
            await backend.apply([SPEC])  # --replicas 1
            assert _only(backend) is first  # no new request goes to the second
            await asyncio.sleep(0.5)
            assert alive(pid) and second.state is ReplicaState.DRAINING  # listed so
            second.outstanding = 0
            await until(lambda: second.state is ReplicaState.STOPPED)
            assert not alive(pid)
            await backend.apply([])  # undeployed, idle: it stops at once
            await until(lambda: first.state is ReplicaState.STOPPED, timeout=10)
        finally:
            await backend.stop()

    asyncio.run(scenario())


def test_a_gpu_replica_finishes_its_requests_before_its_successor_starts(tmp_path: Path) -> None:
    gpu = replace(SPEC, device="cuda:0")  # a fake engine: it never touches a GPU

    async def scenario() -> None:
        backend = LocalBackend(Settings(home=tmp_path, shutdown_timeout_s=30))
        try:
            await backend.apply([gpu])
            [old] = await _ready(backend)
            pid = old.pid
            assert pid is not None
            old.outstanding = 1
            await backend.apply([replace(SLOWER, device="cuda:0")])
            assert _only(backend) is old and old.state is ReplicaState.STOPPING  # no new one
            await asyncio.sleep(0.5)
            assert alive(pid) and old.successor is None  # nothing starts beside it
            old.outstanding = 0
            [new] = await _ready(backend)
            assert new is not old and new.pid != pid and not alive(pid)
            new.outstanding = 1
            await backend.apply([gpu])  # another change, called off while it drains:
            await until(lambda: new.state is ReplicaState.STOPPING)
            await backend.apply([replace(SLOWER, device="cuda:0")])
            assert _only(backend) is new and new.state is READY  # it serves on
        finally:
            await backend.stop()

    asyncio.run(scenario())


def test_a_worker_spawned_as_its_replica_is_stopped_does_not_run_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spawned: list[asyncio.subprocess.Process] = []
    spawn = asyncio.create_subprocess_exec

    async def slow_spawn(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        proc = await spawn(*args, **kwargs)
        spawned.append(proc)
        await asyncio.sleep(0.5)  # the process runs; its supervisor does not have it yet
        return proc

    monkeypatch.setattr(asyncio, "create_subprocess_exec", slow_spawn)

    async def scenario() -> None:
        backend = LocalBackend(Settings(home=tmp_path))
        try:
            await backend.apply([SPEC])
            await until(lambda: bool(spawned))
            await backend.apply([])  # undeployed while its worker spawns
            await until(lambda: spawned[0].returncode is not None, timeout=10)
        finally:
            await backend.stop()

    asyncio.run(scenario())
