"""A worker taken out of routing (replaced by its successor, undeployed or scaled away) that
still finishes its requests is listed ``draining`` by ``GET /admin/replicas`` (what
``zhisuan ps`` shows) until it stops, while routing and the metrics see only the replicas
that serve; it is not restarted if it dies; and a successor starting beside the replica's
worker writes its own log file."""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from _fake_workers import alive, until
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from zhisuan.cluster.base import Replica, ReplicaSpec, ReplicaState
from zhisuan.cluster.local import LocalBackend
from zhisuan.errors import NotFound
from zhisuan.gateway._metrics import Metrics
from zhisuan.gateway._routing import pick_replica
from zhisuan.gateway.routers import admin
from zhisuan.settings import Settings

pytestmark = pytest.mark.usefixtures("fake_workers")

SPEC = ReplicaSpec(model="fake", engine="_worker_fakes:load", device="cpu", model_path=None)
SLOWER = replace(SPEC, options=(("fake", {"delay": 0.01}),))
READY = ReplicaState.READY


async def _listed(backend: LocalBackend) -> list[tuple[str, int | None, int]]:
    """(state, pid, requests in flight) of each row of ``GET /admin/replicas``."""
    gateway = SimpleNamespace(backend=backend)
    request: Any = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(gateway=gateway)))
    return [(r["state"], r["pid"], r["outstanding"]) for r in await admin.replicas(request)]


def _up(backend: LocalBackend) -> list[tuple[dict[str, str], float]]:
    """The ``zhisuan_replica_up`` samples the gateway's ``/metrics`` gives."""
    registry: CollectorRegistry = Metrics(backend).registry
    return [
        (s.labels, s.value)
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
        if s.name == "zhisuan_replica_up"
    ]


async def _one_ready(backend: LocalBackend) -> Replica:
    await until(lambda: [r.state for r in backend.replicas()] == [READY])
    [replica] = backend.replicas()
    assert replica.pid is not None
    return replica


def test_a_replaced_worker_is_listed_draining_until_it_stops(tmp_path: Path) -> None:
    async def scenario() -> None:
        backend = LocalBackend(Settings(home=tmp_path, shutdown_timeout_s=30))
        try:
            await backend.apply([SPEC])
            old = await _one_ready(backend)
            old_pid = old.pid
            old.outstanding = 2  # requests in flight on it, as the gateway counts them
            await backend.apply([SLOWER])
            await until(lambda: backend.replicas()[0] is not old)
            new = await _one_ready(backend)
            assert await _listed(backend) == [("ready", new.pid, 0), ("draining", old_pid, 2)]
            assert old.state is ReplicaState.DRAINING
            assert backend.replicas() == [new]  # routing, /health and metrics read these
            assert pick_replica(backend, "fake") is new
            assert _up(backend) == [({"model": "fake", "replica": "0"}, 1.0)]
            old.outstanding = 0
            await until(lambda: old.state is ReplicaState.STOPPED)
            assert await _listed(backend) == [("ready", new.pid, 0)]
            assert old_pid is not None and not alive(old_pid)
        finally:
            await backend.stop()

    asyncio.run(scenario())


def test_an_undeployed_worker_is_listed_draining_and_its_model_is_gone(tmp_path: Path) -> None:
    async def scenario() -> None:
        backend = LocalBackend(Settings(home=tmp_path, shutdown_timeout_s=30))
        try:
            await backend.apply([SPEC])
            old = await _one_ready(backend)
            old.outstanding = 1
            await backend.apply([])
            assert await _listed(backend) == [("draining", old.pid, 1)]
            assert backend.replicas() == [] and _up(backend) == []
            with pytest.raises(NotFound):  # a 404 still, not a 503 "not ready"
                pick_replica(backend, "fake")
            old.outstanding = 0
            await until(lambda: old.state is ReplicaState.STOPPED)
            assert await _listed(backend) == []
        finally:
            await backend.stop()

    asyncio.run(scenario())


def test_a_draining_worker_that_dies_is_not_restarted(tmp_path: Path) -> None:
    async def scenario() -> None:
        settings = Settings(home=tmp_path, shutdown_timeout_s=30, restart_backoff_s=0.05)
        backend = LocalBackend(settings)
        try:
            await backend.apply([SPEC])
            old = await _one_ready(backend)
            old.outstanding = 1
            await backend.apply([SLOWER])
            await until(lambda: backend.replicas()[0] is not old)
            assert old.pid is not None
            os.kill(old.pid, signal.SIGKILL)  # its request fails with it
            await until(lambda: old.pid is None)
            await asyncio.sleep(0.5)  # ten backoffs: a restart would have come
            assert (old.pid, old.restarts) == (None, 0)
            new = backend.replicas()[0]
            assert await _listed(backend) == [("ready", new.pid, 0), ("draining", None, 1)]
            old.outstanding = 0  # the gateway saw the request fail
            await until(lambda: old.state is ReplicaState.STOPPED)
        finally:
            await backend.stop()

    asyncio.run(scenario())


def _log_of(pid: int) -> str:
    """The name of the file the worker ``pid`` writes its output to."""
    return Path(os.readlink(f"/proc/{pid}/fd/1")).name


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc/PID/fd (Linux)")
def test_a_successor_writes_its_own_log_and_takes_the_replicas_name(tmp_path: Path) -> None:
    loading = replace(SPEC, options=(("load_s", 1.0),))  # a window to look at both

    async def scenario() -> None:
        backend = LocalBackend(Settings(home=tmp_path, shutdown_timeout_s=30))
        try:
            await backend.apply([SPEC])
            old = await _one_ready(backend)
            assert old.pid is not None and _log_of(old.pid) == "fake-0.log"
            old.outstanding = 1
            await backend.apply([loading])
            await until(lambda: old.successor is not None and old.successor.pid is not None)
            assert old.successor is not None and old.successor.pid is not None
            assert _log_of(old.successor.pid) == "fake-0.next.log"
            assert _log_of(old.pid) == "fake-0.log"
            await until(lambda: backend.replicas()[0] is not old)
            new = await _one_ready(backend)
            assert new.pid is not None and _log_of(new.pid) == "fake-0.log"
            assert _log_of(old.pid) == "fake-0.prev.log"  # while it drains
            old.outstanding = 0
            await until(lambda: old.state is ReplicaState.STOPPED)
            logs = tmp_path / "logs"
            assert sorted(p.name for p in logs.iterdir()) == ["fake-0.log", "fake-0.prev.log"]
            await backend.apply([])  # undeployed, then deployed again at once
            await backend.apply([SPEC])
            again = await _one_ready(backend)
            assert again.pid is not None and _log_of(again.pid) == "fake-0.log"
            assert (logs / "fake-0.log").stat().st_ino != (logs / "fake-0.prev.log").stat().st_ino
        finally:
            await backend.stop()

    asyncio.run(scenario())
