"""Supervision: the restart backoff is reset by a run that was ready long enough (not one
that only took long to load), and a replica being stopped for its successor stays out of
routing when its worker crashes and comes back meanwhile."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest
from _fake_workers import until

from zhisuan.cluster import local
from zhisuan.cluster.base import Replica, ReplicaSpec, ReplicaState
from zhisuan.cluster.local import LocalBackend
from zhisuan.settings import Settings

pytestmark = pytest.mark.usefixtures("fake_workers")

SPEC = ReplicaSpec(model="fake", engine="_worker_fakes:load", device="cpu", model_path=None)
READY = ReplicaState.READY


async def _crash_when_ready(replica: Replica) -> None:
    await until(lambda: replica.state is READY and replica.pid is not None)
    assert replica.pid is not None
    os.kill(replica.pid, signal.SIGKILL)
    await until(lambda: replica.state is ReplicaState.RESTARTING)


def test_a_slow_load_does_not_reset_the_restart_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(local, "STABLE_S", 1.0)  # each run loads for 1.5 s, ready for ~0
    slow = replace(SPEC, options=(("load_s", 1.5),))

    async def scenario() -> None:
        settings = Settings(home=tmp_path, restart_backoff_s=0.2, restart_backoff_max_s=10)
        backend = LocalBackend(settings)
        try:
            await backend.apply([slow])
            [replica] = backend.replicas()
            for _ in range(3):
                await _crash_when_ready(replica)
        finally:
            await backend.stop()

    with caplog.at_level(logging.WARNING, logger="zhisuan.cluster.local"):
        asyncio.run(scenario())
    waits = [r.getMessage().rsplit(" ", 1)[1] for r in caplog.records if "restarting in" in r.msg]
    assert waits == ["0.2s", "0.4s", "0.8s"]  # it never stayed up: the backoff grows


def test_a_replica_stopping_for_its_successor_stays_out_of_routing_after_a_crash(
    tmp_path: Path,
) -> None:
    gpu = replace(SPEC, device="cuda:0")  # a fake engine: it never touches a GPU

    async def scenario() -> None:
        settings = Settings(home=tmp_path, shutdown_timeout_s=30, restart_backoff_s=0.1)
        backend = LocalBackend(settings)
        try:
            await backend.apply([gpu])
            await until(lambda: [r.state for r in backend.replicas()] == [READY])
            [old] = backend.replicas()
            old.outstanding = 1  # a request in flight: it drains first
            await backend.apply([replace(gpu, options=(("fake", {"delay": 0.01}),))])
            assert old.state is ReplicaState.STOPPING and old.pid is not None
            first = old.pid
            os.kill(first, signal.SIGKILL)  # it crashes while it drains, and comes back
            await until(lambda: old.pid not in (None, first) and old.ready_since is not None)
            await asyncio.sleep(0.2)
            assert old.state is ReplicaState.STOPPING  # not routed to again
            old.outstanding = 0
            await until(lambda: [r.state for r in backend.replicas()] == [READY])
            assert backend.replicas()[0] is not old
        finally:
            await backend.stop()

    asyncio.run(scenario())
