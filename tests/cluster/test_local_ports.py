"""A worker's port is its own from the moment the local backend names its endpoint."""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from zhisuan.cluster.base import ReplicaSpec, ReplicaState
from zhisuan.cluster.local import LocalBackend
from zhisuan.settings import Settings

FAKES = Path(__file__).resolve().parents[1] / "engines"  # _worker_fakes:load


def test_a_starting_workers_port_cannot_be_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(FAKES))
    spec = ReplicaSpec(model="fake", engine="_worker_fakes:load", device="cpu", model_path=None)

    async def scenario() -> None:
        backend = LocalBackend(Settings(home=tmp_path))
        try:
            await backend.apply([spec])
            (replica,) = backend.replicas()
            while replica.endpoint is None:
                await asyncio.sleep(0.001)
            # the worker is still importing: its port must be held for it already, or
            # another process could bind it (and answer the supervisor's health checks)
            assert replica.state is ReplicaState.STARTING
            with socket.socket() as other, pytest.raises(OSError) as taken:
                other.bind(("127.0.0.1", urlsplit(replica.endpoint).port or 0))
            assert taken.value.errno == errno.EADDRINUSE
            deadline = time.monotonic() + 30
            while replica.state is not ReplicaState.READY:
                assert time.monotonic() < deadline, replica.last_error
                await asyncio.sleep(0.02)
            async with httpx.AsyncClient() as client:
                health = await client.get(f"{replica.endpoint}/health")
            assert health.json()["status"] == "ok"
            assert replica.restarts == 0
        finally:
            await backend.stop()

    asyncio.run(scenario())
