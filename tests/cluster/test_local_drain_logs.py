"""Every worker writes a log file of its own, never renamed or overwritten while it runs (a
worker still draining after two rollouts included); ``<model>-<index>.log`` links to the
serving worker's file; the files of stopped workers are kept, the newest ``KEEP`` per slot."""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import replace
from pathlib import Path

import pytest
from _fake_workers import until

from zhisuan.cluster._logs import KEEP, WorkerLogs
from zhisuan.cluster.base import Replica, ReplicaSpec, ReplicaState
from zhisuan.cluster.local import LocalBackend
from zhisuan.settings import Settings

pytestmark = [
    pytest.mark.usefixtures("fake_workers"),
    pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc/PID/fd (Linux)"),
]

SPEC = ReplicaSpec(model="fake", engine="_worker_fakes:load", device="cpu", model_path=None)
OWN = re.compile(r"fake-0\.\d{8}T\d{6}\.\d{6}Z(-\d+)?\.log")
READY = ReplicaState.READY


def _version(n: int) -> ReplicaSpec:
    """The deployment with its ``n``-th settings (each a rollout from the one before)."""
    return replace(SPEC, options=(("fake", {"eos_after": 10 + n}),))


def _writes(pid: int) -> Path:
    """The file the worker ``pid`` writes its output to (`` (deleted)`` if it was removed)."""
    return Path(os.readlink(f"/proc/{pid}/fd/1"))


async def _rolled(backend: LocalBackend, spec: ReplicaSpec, old: Replica) -> Replica:
    """Deploy ``spec`` and return the worker that took over from ``old``, once ready."""
    await backend.apply([spec])
    await until(lambda: backend.replicas()[0] is not old and backend.replicas()[0].state is READY)
    return backend.replicas()[0]


def test_a_draining_worker_keeps_its_own_log_through_later_rollouts(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    link = logs / "fake-0.log"

    async def scenario() -> None:
        backend = LocalBackend(Settings(home=tmp_path, shutdown_timeout_s=120))
        try:
            await backend.apply([_version(0)])
            await until(lambda: [r.state for r in backend.replicas()] == [READY])
            [first] = backend.replicas()
            assert first.pid is not None
            own = _writes(first.pid)
            first.outstanding = 1  # it drains through every rollout below
            serving, theirs = first, [own]
            for n in range(1, KEEP + 3):  # more stopped workers than are kept
                serving = await _rolled(backend, _version(n), serving)
                assert _writes(first.pid) == own and own.is_file()  # never renamed
                assert serving.pid is not None
                theirs.append(_writes(serving.pid))
                assert len(set(theirs)) == len(theirs)  # a file each
                assert os.readlink(link) == theirs[-1].name  # moved to the successor's
            assert first.state is ReplicaState.DRAINING
            assert all(OWN.fullmatch(p.name) and p.parent == logs for p in theirs)
            assert [first.log, serving.log] == [str(own), str(theirs[-1])]
            # the stopped ones (all but the first and the serving one): the newest KEEP kept
            await until(lambda: len(backend.draining()) == 1)
            await until(lambda: len(_own_files(logs)) == KEEP + 2)
            assert own in _own_files(logs) and Path(serving.log) in _own_files(logs)
            assert "fake-0.log" in os.listdir(logs)
            serving.outstanding = 1
            await backend.apply([])  # undeployed: no serving worker, no link
            assert not link.is_symlink() and not link.exists()
            assert serving.pid is not None and _writes(serving.pid) == Path(serving.log)
            first.outstanding = serving.outstanding = 0
            await until(lambda: backend.draining() == [])
        finally:
            await backend.stop()
        assert len(_own_files(logs)) == KEEP  # none runs now: the newest KEEP of them all
        assert own not in _own_files(logs)

    asyncio.run(scenario())


def _own_files(logs: Path) -> list[Path]:
    return sorted(p for p in logs.iterdir() if OWN.fullmatch(p.name))


def test_a_successor_writes_its_own_log_and_the_link_follows_it(tmp_path: Path) -> None:
    loading = replace(SPEC, options=(("load_s", 1.0),))  # a window to look at both
    link = tmp_path / "logs" / "fake-0.log"

    async def scenario() -> None:
        backend = LocalBackend(Settings(home=tmp_path, shutdown_timeout_s=30))
        try:
            await backend.apply([SPEC])
            await until(lambda: [r.state for r in backend.replicas()] == [READY])
            [old] = backend.replicas()
            assert old.pid is not None
            old_log = _writes(old.pid)
            old.outstanding = 1
            await backend.apply([loading])
            await until(lambda: old.successor is not None and old.successor.pid is not None)
            assert old.successor is not None and old.successor.pid is not None
            new_log = _writes(old.successor.pid)
            assert OWN.fullmatch(new_log.name) and new_log != old_log
            assert os.readlink(link) == old_log.name  # not yet: the old worker serves
            assert old.snapshot()["replacing"]["log"] == str(new_log)
            await until(lambda: backend.replicas()[0] is not old)
            assert os.readlink(link) == new_log.name
            assert _writes(old.pid) == old_log  # it writes on where it did
            assert [r["log"] for r in (backend.replicas()[0].snapshot(), old.snapshot())] == [
                str(new_log),
                str(old_log),
            ]
            old.outstanding = 0
            await until(lambda: old.state is ReplicaState.STOPPED)
            await backend.apply([])  # undeployed, then deployed again at once
            await backend.apply([SPEC])
            await until(lambda: [r.state for r in backend.replicas()] == [READY])
            [again] = backend.replicas()
            assert again.pid is not None
            assert _writes(again.pid) not in (old_log, new_log)
            assert os.readlink(link) == _writes(again.pid).name
        finally:
            await backend.stop()

    asyncio.run(scenario())


def test_old_files_are_pruned_per_slot_never_one_in_use(tmp_path: Path) -> None:
    """The files of one slot only (a model whose name starts like another's is another
    slot), the oldest first, never one whose worker runs; a plain ``<model>-<index>.log`` of
    an older zhisuan becomes an old file."""
    logs = WorkerLogs(tmp_path, keep=2)
    (tmp_path / "fake-0.log").write_text("written by an older zhisuan\n")
    other = replace(SPEC, model="fake-0.x")  # its files: fake-0.x-0.<started>.log
    theirs = logs.new(other)
    running = logs.new(SPEC)  # the oldest, and in use throughout
    logs.serving(SPEC, running)
    assert (tmp_path / "fake-0.log").is_symlink()
    kept = [p for p in tmp_path.iterdir() if OWN.fullmatch(p.name) and p != running]
    assert [p.read_text() for p in kept] == ["written by an older zhisuan\n"]
    stopped = []
    for _ in range(4):
        path = logs.new(SPEC)
        logs.done(SPEC, path)
        stopped.append(path)
    left = sorted(p for p in tmp_path.iterdir() if OWN.fullmatch(p.name))
    assert left == sorted([running, *stopped[-2:]])
    assert theirs.exists() and (tmp_path / "fake-0.log").resolve() == running.resolve()
