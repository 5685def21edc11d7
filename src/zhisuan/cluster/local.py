"""The ``local`` backend: one worker process per replica on this machine.

Each replica has a supervisor task that starts ``python -m zhisuan.engines.worker`` on a
listening socket it binds and hands over, waits for ``GET /health`` to answer 200, then
waits for the process to exit. A worker that exits while it is wanted is restarted with
exponential backoff (reset once a run has been healthy for ``STABLE_S``). Workers get
``PR_SET_PDEATHSIG`` so they never outlive a gateway killed with ``kill -9``. Given a
:class:`~zhisuan.cluster.cores.CoreLayout`, each worker computes on its cores (while the
platform starts, it loads on every core and moves to them once loaded), and running
workers move when the set of CPU replicas changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from zhisuan.cluster import cores as cpu
from zhisuan.cluster.base import Replica, ReplicaSpec, ReplicaState
from zhisuan.settings import Settings

logger = logging.getLogger(__name__)

STABLE_S = 60.0
LISTEN_BACKLOG = 2048  # uvicorn's own default
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _child_setup(cores: frozenset[int] | None) -> Callable[[], None]:
    """What the child runs between fork and exec: die with the parent, move to ``cores``."""

    def setup() -> None:
        _die_with_parent()
        if cores:
            os.sched_setaffinity(0, cores)

    return setup


def listener(host: str = "127.0.0.1") -> socket.socket:
    """A socket listening on a free port of ``host``, for a worker to inherit.

    Bound here and handed over open, the port is the worker's from the start: a port
    picked free and bound later by the worker could be taken in between (by another
    worker, or by a server whose ``/health`` would then answer for it).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((host, 0))
        sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def worker_command(spec: ReplicaSpec, port: int, fd: int | None = None) -> list[str]:
    """The command line that starts a worker for ``spec`` on ``port`` (on socket ``fd``)."""
    cmd = [
        sys.executable,
        "-m",
        "zhisuan.engines.worker",
        "--engine",
        spec.engine,
        "--model-name",
        spec.model,
        "--device",
        spec.device,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--options",
        json.dumps(dict(spec.options)),
    ]
    if spec.model_path:
        cmd += ["--model-path", spec.model_path]
    if fd is not None:
        cmd += ["--fd", str(fd)]
    return cmd


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
        self._replicas: dict[str, Replica] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._client = httpx.AsyncClient(timeout=2.0)

    def replicas(self, model: str | None = None) -> list[Replica]:
        reps = list(self._replicas.values())
        return [r for r in reps if model is None or r.spec.model == model]

    async def apply(self, specs: list[ReplicaSpec]) -> None:
        wanted = {s.key: s for s in specs}
        for key, running in list(self._replicas.items()):
            spec = wanted.get(key)
            if spec is None or not running.spec.runs_as(spec):
                await self._stop_one(key)
            else:
                running.spec = spec  # at most the gateway's options changed: no restart
        if self._cores is not None:
            self._placement = self._cores.assign(specs)
            for key, replica in self._replicas.items():  # running ones move to their new slice
                cores = tuple(sorted(self._placement[key]))
                if replica.pid is not None and replica.cpus != cores:
                    cpu.pin(replica.pid, cores)
                    replica.cpus = cores
        for key, spec in wanted.items():
            if key not in self._replicas:
                replica = Replica(spec=spec)
                self._replicas[key] = replica
                self._tasks[key] = asyncio.create_task(self._supervise(replica))

    async def stop(self) -> None:
        await asyncio.gather(*(self._stop_one(k) for k in list(self._replicas)))
        await self._client.aclose()

    async def _stop_one(self, key: str) -> None:
        replica = self._replicas.pop(key)
        task = self._tasks.pop(key)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        replica.state = ReplicaState.STOPPED

    async def _supervise(self, replica: Replica) -> None:
        backoff = self._settings.restart_backoff_s
        while True:
            started = time.monotonic()
            try:
                await self._run_once(replica)
            except asyncio.CancelledError:
                await self._terminate(replica)
                raise
            except Exception as exc:  # a bug here must not kill supervision
                logger.exception("replica %s: supervisor error", replica.spec.key)
                replica.last_error = str(exc)
            if time.monotonic() - started > STABLE_S:
                backoff = self._settings.restart_backoff_s
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

    async def _run_once(self, replica: Replica) -> None:
        spec = replica.spec
        self._settings.logs_dir.mkdir(parents=True, exist_ok=True)
        log_path = self._settings.logs_dir / f"{spec.model.replace('/', '_')}-{spec.index}.log"
        cores = self._placement.get(spec.key)
        loading_on = cores
        if cores and self._cores is not None and self._starting():
            loading_on = self._cores.every  # nothing is served yet: load on every core
        with listener() as sock, log_path.open("ab") as log:  # the worker keeps its copy
            port = int(sock.getsockname()[1])
            proc = await asyncio.create_subprocess_exec(
                *worker_command(spec, port, sock.fileno()),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=_child_setup(loading_on),
                pass_fds=(sock.fileno(),),
                env=_worker_env(cores),
            )
        self._procs[spec.key] = proc
        replica.pid = proc.pid
        replica.cpus = tuple(sorted(cores)) if cores else None
        replica.generation += 1
        replica.endpoint = f"http://127.0.0.1:{port}"
        if replica.state is not ReplicaState.RESTARTING:
            replica.state = ReplicaState.STARTING
        logger.info("replica %s: started pid %s on port %s", spec.key, proc.pid, port)
        if await self._wait_ready(replica, proc):
            cores = self._placement.get(spec.key)
            if cores:  # it moved itself once loaded; where the replicas stand now
                cpu.pin(proc.pid, cores)
                replica.cpus = tuple(sorted(cores))
            replica.state = ReplicaState.READY
            replica.ready_since = time.monotonic()
            replica.last_error = None
            logger.info("replica %s: ready", spec.key)
            code = await proc.wait()
        else:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            code = await proc.wait()
            replica.last_error = _last_line(log_path) or "worker did not become ready"
        replica.ready_since = None
        replica.pid = None
        if replica.last_error is None:
            replica.last_error = f"worker exited with code {code}"

    def _starting(self) -> bool:
        """Whether no replica is ready yet (the platform is starting)."""
        return not any(r.state is ReplicaState.READY for r in self._replicas.values())

    async def _wait_ready(self, replica: Replica, proc: asyncio.subprocess.Process) -> bool:
        deadline = time.monotonic() + self._settings.worker_start_timeout_s
        url = f"{replica.endpoint}/health"
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                return False
            with contextlib.suppress(httpx.HTTPError):
                if (await self._client.get(url)).status_code == 200:
                    return True
            try:
                await asyncio.wait_for(proc.wait(), timeout=0.05)
            except TimeoutError:
                continue
        return False

    async def _terminate(self, replica: Replica) -> None:
        proc = self._procs.pop(replica.spec.key, None)
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), timeout=5.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        replica.pid = None


def _worker_env(cores: frozenset[int] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop(cpu.CPUS_ENV, None)
    if cores:
        env[cpu.CPUS_ENV] = ",".join(str(c) for c in sorted(cores))
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def _last_line(path: Path) -> str | None:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None
    return lines[-1][:500] if lines else None
