"""The worker process of a local replica: its command line, its socket, its environment,
its first answer to ``/health``, the last line of its log, its end (its log file:
:mod:`zhisuan.cluster._logs`).

A worker is ``python -m zhisuan.engines.worker`` on a listening socket the backend binds and
hands over; between fork and exec it asks to die with the gateway (``PR_SET_PDEATHSIG``) and
moves to its cores. It is ended with ``SIGTERM``, then ``SIGKILL`` after 5 s (:func:`end`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from zhisuan.cluster import cores as cpu
from zhisuan.cluster._drain import POLL_S
from zhisuan.cluster.base import ReplicaSpec

LISTEN_BACKLOG = 2048  # uvicorn's own default
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def child_setup(cores: frozenset[int] | None) -> Callable[[], None]:
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


def worker_env(cores: frozenset[int] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop(cpu.CPUS_ENV, None)
    if cores:
        env[cpu.CPUS_ENV] = ",".join(str(c) for c in sorted(cores))
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


_LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+: ")
"""What the worker's logging puts before a message (its time, level and logger)."""


def last_line(path: Path) -> str | None:
    """The last line of a worker's log, without the logging prefix: why it stopped."""
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None
    return _LOG_PREFIX.sub("", lines[-1])[:500] if lines else None


async def healthy(
    client: httpx.AsyncClient, url: str, proc: asyncio.subprocess.Process, timeout_s: float
) -> bool:
    """Whether the worker ``proc`` answers 200 at ``url`` (its ``/health``) within
    ``timeout_s`` seconds; False at once if it exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            return False
        with contextlib.suppress(httpx.HTTPError):
            if (await client.get(url)).status_code == 200:
                return True
        try:
            await asyncio.wait_for(proc.wait(), timeout=POLL_S)
        except TimeoutError:
            continue
    return False


ending: set[asyncio.Task[None]] = set()
"""Workers being ended (a stopping backend waits for them)."""


async def end(proc: asyncio.subprocess.Process) -> None:
    """Terminate ``proc`` and reap it, even if the caller is cancelled again meanwhile (a
    rollout called off while it stops a worker): no worker outlives its supervisor."""
    task = asyncio.ensure_future(_terminate(proc))
    ending.add(task)
    task.add_done_callback(ending.discard)
    await asyncio.shield(task)


async def _terminate(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), timeout=5.0)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
