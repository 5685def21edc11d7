"""Rollouts under reconciles that come at awkward moments: while a GPU replica's worker is
being stopped for its successor, during a rollout called off, from two admin writes at
once, with a replica of the deployment restarting, and a broken change undone. No worker
runs unsupervised, none is started twice, and a deployment of two keeps one serving."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
from _fake_workers import until

from zhisuan.cluster.base import Replica, ReplicaSpec, ReplicaState
from zhisuan.cluster.local import LocalBackend
from zhisuan.settings import Settings

pytestmark = pytest.mark.usefixtures("fake_workers")

GPU = ReplicaSpec(model="fake", engine="_worker_fakes:load", device="cuda:0", model_path=None)
SLOW_TO_STOP = replace(GPU, options=(("fake", {"close_s": 1.5}),))  # a fake: no GPU touched
CHANGED = replace(GPU, options=(("fake", {"delay": 0.01}),))
BROKEN = replace(GPU, options=(("fail", True),))
OTHER = ReplicaSpec(model="other", engine="_worker_fakes:load", device="cpu", model_path=None)
READY, STOPPED = ReplicaState.READY, ReplicaState.STOPPED


def _workers() -> list[int]:
    """Worker processes this test process started and that still run."""
    children = psutil.Process().children(recursive=True)
    running = [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    return [p.pid for p in running if "zhisuan.engines.worker" in " ".join(p.cmdline())]


def _states(backend: LocalBackend) -> list[ReplicaState]:
    return [r.state for r in backend.replicas()]


async def _stopping_in_place(backend: LocalBackend) -> Replica:
    """Deploy SLOW_TO_STOP, then change it: returns the replica while its worker stops."""
    await backend.apply([SLOW_TO_STOP])
    await until(lambda: _states(backend) == [READY])
    [old] = backend.replicas()
    await backend.apply([CHANGED])
    await until(lambda: old.state is STOPPED)
    assert old.pid is not None  # its worker takes 1.5 s to stop
    return old


def test_a_reconcile_while_a_gpu_worker_stops_starts_no_second_worker(tmp_path: Path) -> None:
    async def scenario() -> None:
        backend = LocalBackend(Settings(home=tmp_path))
        try:
            old = await _stopping_in_place(backend)
            await backend.apply([CHANGED])  # any admin write reconciles with the same specs
            assert backend.replicas() == [old]  # still the one being stopped, nothing more
            await until(lambda: _states(backend) == [READY] and not backend._rollouts)
            [new] = backend.replicas()
            assert new.spec == CHANGED and _workers() == [new.pid]
            await backend.apply([])
            await until(lambda: not _workers(), timeout=10)
        finally:
            await backend.stop()
        assert not _workers()

    asyncio.run(scenario())


def test_an_undeploy_while_a_gpu_worker_stops(tmp_path: Path) -> None:
    async def scenario() -> None:
        backend = LocalBackend(Settings(home=tmp_path))
        try:
            await _stopping_in_place(backend)
            await backend.apply([OTHER])  # "fake" undeployed, "other" deployed
            assert not backend._rollouts
            await until(lambda: _states(backend) == [READY])
            assert [r.spec for r in backend.replicas()] == [OTHER]
            await until(lambda: len(_workers()) == 1, timeout=10)
        finally:
            await backend.stop()
        assert not _workers()

    asyncio.run(scenario())


def test_a_change_called_off_once_the_worker_stopped_starts_what_is_wanted(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        backend = LocalBackend(Settings(home=tmp_path))
        try:
            await _stopping_in_place(backend)
            await backend.apply([SLOW_TO_STOP])  # undone: the worker is gone all the same
            assert not backend._rollouts
            await until(lambda: _states(backend) == [READY])
            assert [r.spec for r in backend.replicas()] == [SLOW_TO_STOP]
            assert len(_workers()) == 1
        finally:
            await backend.stop()
        assert not _workers()

    asyncio.run(scenario())


def test_a_stop_while_a_gpu_worker_stops_for_a_broken_change(tmp_path: Path) -> None:
    async def scenario() -> None:
        backend = LocalBackend(Settings(home=tmp_path, restart_backoff_s=0.2))
        await backend.apply([SLOW_TO_STOP])
        await until(lambda: _states(backend) == [READY])
        [old] = backend.replicas()
        await backend.apply([BROKEN])
        await until(lambda: old.state is STOPPED)
        began = time.monotonic()
        await asyncio.wait_for(backend.stop(), 15)  # the rollout does not go on
        assert time.monotonic() - began < 10
        assert not _workers()

    asyncio.run(scenario())


def test_two_reconciles_at_once_end_with_the_later_one(tmp_path: Path) -> None:
    cpu = replace(GPU, device="cpu")
    changed = replace(CHANGED, device="cpu")

    async def scenario() -> None:
        backend = LocalBackend(Settings(home=tmp_path))
        try:
            await backend.apply([cpu, OTHER])
            await until(lambda: _states(backend) == [READY, READY])
            await backend.apply([changed, OTHER])  # a successor starts beside "fake"
            [x] = backend.replicas("fake")
            await until(lambda: x.successor is not None and x.successor.pid is not None)
            # one admin write undoes the change, the next undeploys "other"
            await asyncio.gather(backend.apply([cpu, OTHER]), backend.apply([cpu]))
            await asyncio.sleep(1.0)
            assert [r.spec for r in backend.replicas()] == [cpu]
            await until(lambda: len(_workers()) == 1, timeout=10)
        finally:
            await backend.stop()

    asyncio.run(scenario())


def test_a_gpu_rollout_keeps_one_replica_ready_while_another_restarts(tmp_path: Path) -> None:
    async def scenario() -> None:
        backend = LocalBackend(Settings(home=tmp_path, restart_backoff_s=1.0))
        try:
            await backend.apply([replace(GPU, index=i) for i in range(2)])
            await until(lambda: _states(backend) == [READY, READY])
            second = backend.replicas()[1]
            assert second.pid is not None
            os.kill(second.pid, signal.SIGKILL)  # a crash: it restarts after 1 s
            await until(lambda: second.state is ReplicaState.RESTARTING)
            wanted = [replace(CHANGED, index=i) for i in range(2)]
            await backend.apply(wanted)
            ready: list[int] = []
            while [r.spec for r in backend.replicas()] != wanted or _states(backend) != [READY] * 2:
                ready.append(_states(backend).count(READY))
                await asyncio.sleep(0.01)
            assert min(ready) >= 1  # the restarting one was replaced first
        finally:
            await backend.stop()

    asyncio.run(scenario())


def test_a_broken_gpu_change_is_undone_by_deploying_the_old_spec(tmp_path: Path) -> None:
    async def scenario() -> None:
        settings = Settings(home=tmp_path, restart_backoff_s=0.2, restart_backoff_max_s=0.5)
        backend = LocalBackend(settings)
        try:
            await backend.apply([GPU])
            await until(lambda: _states(backend) == [READY])
            await backend.apply([BROKEN])
            await until(lambda: backend.replicas()[0].restarts >= 2)
            await backend.apply([GPU])  # undone
            await until(lambda: [(r.spec, r.state) for r in backend.replicas()] == [(GPU, READY)])
            await until(lambda: not backend._rollouts)
            assert len(_workers()) == 1
        finally:
            await backend.stop()

    asyncio.run(scenario())
