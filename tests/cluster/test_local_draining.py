"""A worker taken out of routing (replaced by its successor, undeployed or scaled away) that
still finishes its requests is listed ``draining`` by ``GET /admin/replicas`` (what
``zhisuan ps`` shows), with its uptime, until it stops, while routing and
``zhisuan_replica_up`` see only the replicas that serve and ``zhisuan_replica_requests``
counts its requests under its replica; it is not restarted if it dies (its log:
``test_local_drain_logs.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
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
    rows = await admin.replicas(_request(backend))
    return [(r["state"], r["pid"], r["outstanding"]) for r in rows]


def _request(backend: LocalBackend) -> Any:
    """A request to the admin API of a gateway running ``backend``."""
    gateway = SimpleNamespace(backend=backend)
    return SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(gateway=gateway)))


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


@pytest.mark.parametrize("state", [ReplicaState.DRAINING, ReplicaState.STOPPING])
def test_a_worker_finishing_its_requests_has_the_uptime_it_served(state: ReplicaState) -> None:
    replica = Replica(SPEC, state=state, pid=4301, ready_since=time.monotonic() - 600)
    assert replica.uptime_s >= 600 and replica.snapshot()["uptime_s"] >= 600
    assert Replica(SPEC, state=ReplicaState.RESTARTING).snapshot()["uptime_s"] == 0.0


def test_zhisuan_ps_shows_a_draining_workers_uptime(tmp_path: Path) -> None:
    async def scenario() -> None:
        backend = LocalBackend(Settings(home=tmp_path, shutdown_timeout_s=30))
        try:
            await backend.apply([SPEC])
            old = await _one_ready(backend)
            await until(lambda: old.uptime_s >= 0.5)
            old.outstanding = 1
            await backend.apply([SLOWER])
            await until(lambda: backend.replicas()[0] is not old)
            rows = {r["state"]: r for r in await admin.replicas(_request(backend))}
            assert rows["draining"]["pid"] == old.pid
            assert rows["draining"]["uptime_s"] >= 0.5  # it has served that long, and serves on
            old.outstanding = 0
            await until(lambda: old.state is ReplicaState.STOPPED)
        finally:
            await backend.stop()

    asyncio.run(scenario())


SLOW = replace(SPEC, options=(("fake", {"delay": 60.0}),))  # a request that runs on


async def _chat(session: aiohttp.ClientSession, endpoint: str | None) -> None:
    body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    async with session.post(f"{endpoint}/v1/chat/completions", json=body) as resp:
        await resp.read()


def _requests(metrics: Metrics) -> dict[tuple[str, ...], float]:
    """The ``zhisuan_replica_*`` samples a scrape gives, by name and labels."""
    return {
        (s.name, *s.labels.values()): s.value
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        for s in family.samples
        if s.name.startswith(("zhisuan_replica_", "zhisuan_requests_queued"))
    }


def test_a_draining_workers_requests_count_under_its_replica(tmp_path: Path) -> None:
    """Its requests in ``zhisuan_replica_requests`` (under its replica's labels, added to its
    successor's), and no ``zhisuan_replica_up`` of its own."""

    async def scenario() -> None:
        backend = LocalBackend(Settings(home=tmp_path, shutdown_timeout_s=120))
        metrics = Metrics(backend)
        async with aiohttp.ClientSession() as session:
            try:
                await backend.apply([SLOW])
                old = await _one_ready(backend)
                running = asyncio.create_task(_chat(session, old.endpoint))
                while metrics.load.get(("fake", "0")) != (1, 0):  # the worker runs it
                    assert not running.done()
                    await metrics.poll(session)
                    await asyncio.sleep(0.01)
                old.outstanding = 1  # as the gateway counts it
                await backend.apply([SPEC])
                await until(lambda: backend.replicas()[0] is not old)
                await until(lambda: backend.replicas()[0].state is READY)
                assert old.state is ReplicaState.DRAINING
                await metrics.poll(session)
                assert _requests(metrics) == {
                    ("zhisuan_replica_up", "fake", "0"): 1.0,  # the successor's only
                    ("zhisuan_replica_restarts_total", "fake", "0"): 0.0,
                    ("zhisuan_replica_requests", "fake", "0", "running"): 1.0,
                    ("zhisuan_replica_requests", "fake", "0", "waiting"): 0.0,
                    ("zhisuan_requests_queued", "fake"): 0.0,
                }
                assert pick_replica(backend, "fake") is backend.replicas()[0]
                running.cancel()  # the client leaves: the worker ends the request
                with contextlib.suppress(asyncio.CancelledError):
                    await running
                old.outstanding = 0
                await until(lambda: old.state is ReplicaState.STOPPED)
                await metrics.poll(session)
                assert _requests(metrics)[("zhisuan_replica_requests", "fake", "0", "running")] == 0
            finally:
                await backend.stop()

    asyncio.run(scenario())
