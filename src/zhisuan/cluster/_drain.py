"""Workers leaving routing: each finishes the requests it runs, then stops.

A replica's worker replaced by its successor, undeployed or scaled away is ``draining``: it is
out of the backend's replicas (so routing, ``/health`` and ``zhisuan_replica_up`` no longer
see it; the requests it runs still count in ``zhisuan_replica_requests``) and listed apart
(:class:`Draining`) until its requests are done or the shutdown time is over;
then its supervisor is cancelled, which ends the worker, and it is ``stopped``. One that
dies meanwhile is not restarted (:func:`retired`).
"""

from __future__ import annotations

import asyncio
import time

from zhisuan.cluster.base import Replica, ReplicaState

POLL_S = 0.05


class Draining:
    """The draining workers of a backend, each stopped by a task of its own."""

    def __init__(self) -> None:
        self._tasks: dict[asyncio.Task[None], Replica] = {}

    def replicas(self) -> list[Replica]:
        """The workers still draining."""
        return [r for r in self._tasks.values() if retired(r)]

    def add(self, old: Replica, supervisor: asyncio.Task[None], timeout_s: float) -> None:
        """Take ``old`` out of service: ``draining`` until the requests it runs are done (at
        most ``timeout_s`` seconds), then its ``supervisor`` is cancelled."""
        if old.state is not ReplicaState.STOPPED:  # a worker stopped already is not listed
            old.state = ReplicaState.DRAINING
        task = asyncio.create_task(_drain(old, supervisor, timeout_s))
        self._tasks[task] = old
        task.add_done_callback(self._tasks.pop)

    async def stop(self) -> None:
        """Stop every draining worker now, and wait for their supervisors to end."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def retired(replica: Replica) -> bool:
    """Whether ``replica`` left routing for good (``draining``): no worker starts for it."""
    return replica.state is ReplicaState.DRAINING


async def drained(replica: Replica, timeout_s: float) -> None:
    """Return once the requests ``replica`` runs are done, or after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while replica.outstanding > 0 and time.monotonic() < deadline:
        await asyncio.sleep(POLL_S)


async def _drain(old: Replica, supervisor: asyncio.Task[None], timeout_s: float) -> None:
    try:
        await drained(old, timeout_s)
    finally:
        try:
            await cancel(supervisor)
        finally:
            old.state = ReplicaState.STOPPED  # its worker is gone (or going: stop() waits)


async def cancel(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait for it; a caller cancelled meanwhile is cancelled still (it
    does not go on as if it had only waited)."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
