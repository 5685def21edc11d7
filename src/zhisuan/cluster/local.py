"""The ``local`` backend: one worker process per replica on this machine.

Each replica has a supervisor task that starts ``python -m zhisuan.engines.worker`` on a
listening socket it binds and hands over, waits for ``GET /health`` to answer 200, then
waits for the process to exit. A worker that exits while it is wanted is restarted with
exponential backoff (reset once a run has been healthy for ``STABLE_S``). Workers get
``PR_SET_PDEATHSIG`` so they never outlive a gateway killed with ``kill -9``. Given a
:class:`~zhisuan.cluster.cores.CoreLayout`, each worker computes on its cores (while the
platform starts, it loads on every core and moves to them once loaded), and running
workers move when the set of CPU replicas changes.

A changed spec is rolled out one replica of a deployment at a time. A ready CPU replica
keeps serving while its successor starts on the same cores; once the successor is ready,
it takes the requests and the old worker stops when its own requests are done (or after
``shutdown_timeout_s``). A successor that never becomes ready leaves the old worker
serving and the rollout where it is, with its error in :meth:`Replica.snapshot`. A GPU
replica (whose memory a second copy may not find) is ``stopping`` while it finishes its
requests, taking no new one, and stopped before its successor starts; it is taken down only
while another replica of its deployment is ready (or it is the only one). Replicas not
serving anyway are replaced first, and stopped at once. The next replica waits until the
one before is ready. A change undone or changed again calls the rollout off wherever it
is. A replica undeployed (or scaled away) leaves routing at once and stops once its
requests are done. A worker out of routing is listed ``draining`` meanwhile
(:mod:`zhisuan.cluster._drain`), and not restarted if it dies. Each worker writes a log file of
its own, and ``<logs>/<model>-<index>.log`` links to the serving worker's
(:mod:`zhisuan.cluster._logs`). Reconciles run one at a time, each from the latest specs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

import httpx

from zhisuan.cluster import cores as cpu
from zhisuan.cluster._drain import POLL_S, Draining, cancel, drained, retired
from zhisuan.cluster._logs import WorkerLogs
from zhisuan.cluster._process import (
    child_setup,
    end,
    ending,
    healthy,
    last_line,
    listener,
    worker_command,
    worker_env,
)
from zhisuan.cluster.base import Replica, ReplicaSpec, ReplicaState
from zhisuan.settings import Settings

__all__ = ["STABLE_S", "LocalBackend", "listener", "worker_command"]

logger = logging.getLogger(__name__)

STABLE_S = 60.0
_OUT = (ReplicaState.STOPPING, ReplicaState.DRAINING)  # states that take no new request


class LocalBackend:
    """Worker processes on this machine, supervised and restarted with backoff."""

    def __init__(self, settings: Settings, cores: cpu.CoreLayout | None = None) -> None:
        """
        Args:
            settings: platform settings (logs directory, restart backoff, timeouts).
            cores: where workers run (None: wherever the OS puts them).
        """
        self._settings = settings
        self._cores = cores
        self._placement: dict[str, frozenset[int]] = {}
        self._wanted: dict[str, ReplicaSpec] = {}
        self._replicas: dict[str, Replica] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._rollouts: dict[str, asyncio.Task[None]] = {}  # by model
        self._rolling: dict[str, tuple[str, ReplicaSpec]] = {}  # model: the key it changes, to what
        self._draining = Draining()
        self._logs = WorkerLogs(settings.logs_dir)
        self._lock = asyncio.Lock()  # one reconcile (or stop) at a time
        self._client = httpx.AsyncClient(timeout=2.0)

    def replicas(self, model: str | None = None) -> list[Replica]:
        reps = list(self._replicas.values())
        return [r for r in reps if model is None or r.spec.model == model]

    def draining(self) -> list[Replica]:
        """Workers out of routing that finish their requests (see ``Drains.draining``)."""
        return self._draining.replicas()

    async def apply(self, specs: list[ReplicaSpec]) -> None:
        async with self._lock:
            await self._reconcile({s.key: s for s in specs})
        await asyncio.sleep(0)  # new rollouts start their first successor before this returns

    async def _reconcile(self, wanted: dict[str, ReplicaSpec]) -> None:
        self._wanted = wanted
        for model, (key, target) in list(self._rolling.items()):
            spec = wanted.get(key)
            if spec is None or not target.runs_as(spec):
                await self._halt(model)  # the change under way is no longer wanted
        for key, running in list(self._replicas.items()):
            spec = wanted.get(key)
            if spec is None:  # undeployed or scaled down: no new requests, then it stops
                await self._halt(running.spec.model)
                self._retire(running, self._tasks.pop(key))
                del self._replicas[key]
                continue
            for replica in (running, running.successor):
                if replica is not None and replica.spec.runs_as(spec):
                    replica.spec = spec  # at most the gateway's options changed: no restart
            if running.state is ReplicaState.STOPPED and not self._changing(key):
                # a rollout called off once it had stopped the worker: start what is wanted
                self._start(spec, running.restarts, after=self._tasks[key])
        if self._cores is not None:
            self._placement = self._cores.assign(list(wanted.values()))
            current = list(self._replicas.values())
            moving = [*current, *(r.successor for r in current if r.successor is not None)]
            for replica in moving:  # running ones move to their new slice
                cores = tuple(sorted(self._placement[replica.spec.key]))
                if replica.pid is not None and replica.cpus != cores:
                    cpu.pin(replica.pid, cores)
                    replica.cpus = cores
        for key, spec in wanted.items():
            if key not in self._replicas:
                self._start(spec)
        for model in {s.model for k, s in wanted.items() if not self._current(k, s)}:
            if model not in self._rollouts:
                self._rollouts[model] = asyncio.create_task(self._roll(model))

    async def stop(self) -> None:
        async with self._lock:
            for model in list(self._rollouts):
                await self._halt(model)
            await self._draining.stop()
            await asyncio.gather(*(self._stop_one(k) for k in list(self._replicas)))
            await asyncio.gather(*ending)  # workers still being stopped
            await self._client.aclose()

    def _current(self, key: str, spec: ReplicaSpec) -> bool:
        """Whether the replica running as ``key`` serves ``spec``."""
        return self._replicas[key].spec.runs_as(spec)

    def _changing(self, key: str) -> bool:
        """Whether a rollout is changing the replica ``key`` now."""
        return any(k == key for k, _ in self._rolling.values())

    def _start(
        self, spec: ReplicaSpec, restarts: int = 0, after: asyncio.Task[None] | None = None
    ) -> Replica:
        """Supervise a new replica for ``spec`` (its worker starts once ``after``, the
        supervisor of a worker being stopped for it, is done)."""
        replica = Replica(spec=spec, restarts=restarts)
        self._replicas[spec.key] = replica
        self._tasks[spec.key] = asyncio.create_task(self._supervise(replica, after))
        return replica

    async def _stop_one(self, key: str) -> None:
        replica = self._replicas.pop(key)
        await cancel(self._tasks.pop(key))
        replica.state = ReplicaState.STOPPED

    async def _halt(self, model: str) -> None:
        """Stop the rollout of ``model`` where it is (a successor starting is stopped)."""
        task = self._rollouts.pop(model, None)
        self._rolling.pop(model, None)
        if task is not None:
            await cancel(task)

    async def _roll(self, model: str) -> None:
        """Bring the replicas of ``model`` to their wanted spec, one at a time: those not
        serving first, then by index."""
        try:
            while stale := sorted(
                (r.state is ReplicaState.READY, r.spec.index, k)
                for k, r in self._replicas.items()
                if r.spec.model == model and not self._current(k, self._wanted.get(k, r.spec))
            ):
                key = stale[0][2]
                if not self._may_replace(key):
                    await asyncio.sleep(POLL_S)
                    continue
                self._rolling[model] = (key, self._wanted[key])
                await self._replace(key)
        except Exception:  # a bug here must not pass unseen: the next reconcile starts anew
            logger.exception("rollout of %s failed", model)
        finally:
            if self._rollouts.get(model) is asyncio.current_task():
                del self._rollouts[model]
                self._rolling.pop(model, None)

    def _may_replace(self, key: str) -> bool:
        """Whether the rollout may change replica ``key`` now: no other replica of its
        deployment is loading, and one that serves and must stop first (in place) leaves
        another serving, unless it is the deployment's only replica."""
        replica = self._replicas[key]
        others = [r for k, r in self._replicas.items() if r.spec.model == replica.spec.model]
        others = [r for r in others if r is not replica]
        if any(r.state is ReplicaState.STARTING for r in others):
            return False  # the one before (or a new one) loads first
        if replica.state is not ReplicaState.READY or self._wanted[key].device == "cpu":
            return True  # not serving anyway, or serving on while its successor starts
        return not others or any(r.state is ReplicaState.READY for r in others)

    async def _replace(self, key: str) -> None:
        old, spec = self._replicas[key], self._wanted[key]
        if spec.device != "cpu" or old.state is not ReplicaState.READY:
            await self._replace_in_place(key)
            await _ready(self._start(self._wanted[key], old.restarts))  # as wanted now
            return
        successor = Replica(spec=spec)
        task = asyncio.create_task(self._supervise(successor))
        old.successor = successor
        try:
            await _ready(successor)
        except BaseException:
            await cancel(task)
            raise
        finally:
            old.successor = None
        self._replicas[key], old_task = successor, self._tasks[key]
        self._tasks[key] = task
        successor.restarts += old.restarts  # the replica's count goes on (a counter metric)
        logger.info("replica %s: pid %s takes over from pid %s", key, successor.pid, old.pid)
        if successor.log is not None:
            self._logs.serving(spec, Path(successor.log))
        self._draining.add(old, old_task, self._settings.shutdown_timeout_s)

    async def _replace_in_place(self, key: str) -> None:
        """Stop replica ``key`` for a successor that cannot run beside it (a GPU's memory
        may not hold two copies): it takes no new request and finishes those it runs first.
        It stays listed, ``stopped``, until its successor starts, so that no reconcile
        starts another worker for it meanwhile; once stopping, its worker is gone even if
        the rollout is called off (a reconcile then starts what is wanted)."""
        old, task = self._replicas[key], self._tasks[key]
        if old.state is ReplicaState.READY:
            old.state = ReplicaState.STOPPING
            try:
                await drained(old, self._settings.shutdown_timeout_s)
            except asyncio.CancelledError:
                if old.state is ReplicaState.STOPPING:  # the change was called off: it serves on
                    ready = old.ready_since is not None  # (or restarts, if it crashed meanwhile)
                    old.state = ReplicaState.READY if ready else ReplicaState.RESTARTING
                raise
        old.state = ReplicaState.STOPPED
        task.cancel()
        await asyncio.wait([task])

    def _retire(self, old: Replica, task: asyncio.Task[None]) -> None:
        """Stop a replica undeployed or scaled away once the requests it runs are done (it
        is ``draining`` meanwhile); ``<model>-<index>.log`` no longer names its log."""
        self._draining.add(old, task, self._settings.shutdown_timeout_s)
        if old.log is not None:
            self._logs.unserved(old.spec, Path(old.log))

    async def _supervise(self, replica: Replica, after: asyncio.Task[None] | None = None) -> None:
        try:
            await self._keep_up(replica, after)
        finally:  # no worker of it runs any more: its log is an old one
            if replica.log is not None:
                self._logs.done(replica.spec, Path(replica.log))

    async def _keep_up(self, replica: Replica, after: asyncio.Task[None] | None) -> None:
        if after is not None:
            await asyncio.wait([after])  # the worker it replaces is gone first
        backoff = self._settings.restart_backoff_s
        while not retired(replica):  # no worker starts for one out of routing
            healthy_s = 0.0
            try:
                healthy_s = await self._run_once(replica)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug here must not kill supervision
                logger.exception("replica %s: supervisor error", replica.spec.key)
                replica.last_error = str(exc)
            if retired(replica):
                return  # its requests failed with it, and no new one comes
            if healthy_s > STABLE_S:
                backoff = self._settings.restart_backoff_s
            if replica.state not in _OUT:  # one taking no request stays so
                replica.state = ReplicaState.RESTARTING
            replica.restarts += 1
            logger.warning(
                "replica %s exited (%s); restarting in %.1fs",
                replica.spec.key,
                replica.last_error,
                backoff,
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._settings.restart_backoff_max_s)

    async def _run_once(self, replica: Replica) -> float:
        """Run the replica's worker until it exits; the seconds it was ready."""
        spec = replica.spec
        if replica.log is None:  # its first start: a file of its own (a restart appends)
            replica.log = str(self._logs.new(spec))
        output = Path(replica.log)
        if self._replicas.get(spec.key) is replica:  # not a successor starting beside it
            self._logs.serving(spec, output)
        cores = self._placement.get(spec.key)
        loading_on = cores
        if cores and self._cores is not None and self._starting():
            loading_on = self._cores.every  # nothing is served yet: load on every core
        with listener() as sock, output.open("ab") as log:  # the worker keeps its copy
            port = int(sock.getsockname()[1])
            spawn = asyncio.ensure_future(
                asyncio.create_subprocess_exec(
                    *worker_command(spec, port, sock.fileno()),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    preexec_fn=child_setup(loading_on),
                    pass_fds=(sock.fileno(),),
                    env=worker_env(cores),
                )
            )
            try:
                proc = await asyncio.shield(spawn)
            except asyncio.CancelledError:  # stopped while it spawned: no worker runs on
                await end(await spawn)
                raise
        replica.pid = proc.pid
        replica.cpus = tuple(sorted(cores)) if cores else None
        replica.generation += 1
        replica.endpoint = f"http://127.0.0.1:{port}"
        if replica.state not in (ReplicaState.RESTARTING, *_OUT):
            replica.state = ReplicaState.STARTING
        logger.info("replica %s: started pid %s on port %s", spec.key, proc.pid, port)
        try:
            code = await self._serve(replica, proc, output)
        except asyncio.CancelledError:
            await end(proc)
            raise
        finally:
            ready_since, replica.ready_since, replica.pid = replica.ready_since, None, None
        if replica.last_error is None:
            replica.last_error = f"worker exited with code {code}"
        return 0.0 if ready_since is None else time.monotonic() - ready_since

    async def _serve(self, replica: Replica, proc: asyncio.subprocess.Process, output: Path) -> int:
        """Wait for the worker to be ready, then for it to exit; its exit code."""
        timeout_s = self._settings.worker_start_timeout_s
        if not await healthy(self._client, f"{replica.endpoint}/health", proc, timeout_s):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            code = await proc.wait()
            replica.last_error = last_line(output) or "worker did not become ready"
            return code
        cores = self._placement.get(replica.spec.key)
        if cores:  # it moved itself once loaded; where the replicas stand now
            cpu.pin(proc.pid, cores)
            replica.cpus = tuple(sorted(cores))
        if replica.state not in _OUT:
            replica.state = ReplicaState.READY
        replica.ready_since = time.monotonic()
        replica.last_error = None
        logger.info("replica %s: ready", replica.spec.key)
        return await proc.wait()

    def _starting(self) -> bool:
        """Whether no replica is ready yet (the platform is starting)."""
        return not any(r.state is ReplicaState.READY for r in self._replicas.values())


async def _ready(replica: Replica) -> None:
    """Return once ``replica`` is ready (a rollout waits here for as long as it takes)."""
    while replica.state is not ReplicaState.READY:
        await asyncio.sleep(POLL_S)
