"""CPU cores for the gateway and for CPU replicas on one host.

On a host that runs CPU engines, the gateway and the engines compete for the same cores.
An engine step is a chain: its threads compute, its event loop hands each token to the
gateway, the gateway relays it. When the scheduler puts the gateway (or another worker)
on a core an engine computes on, the engine's step waits, and every token of every
stream waits with it. So by default (``ZHISUAN_CPU_PINNING=auto``) the gateway keeps the
first core(s) for itself, and CPU replicas share the rest, each on its own slice:

- 2 cores: the gateway on core 0, a CPU replica on core 1. Measured with
  ``benchmarks/bench_gateway_overhead.py --max-tokens 64``: streams through the gateway at
  concurrency 1 reached 93.0% of the direct throughput (+10.1 ms p50) unpinned, 99.0%
  (+2.1 ms p50) pinned.
- more CPU replicas than cores: slices of one core, dealt round the cores.

Replicas on other devices (``cuda:N``) and ``upstream`` replicas run on every core.
With ``ZHISUAN_CPU_PINNING=off``, or one core, or off Linux, nothing is pinned.

A worker started while no replica is ready yet (the platform's start) imports and loads
its model on every core, and moves to its own (:data:`CPUS_ENV`, :func:`settle`) once
loaded, before it serves: at start the gateway's core is idle, and three demo workers
importing torch on one core took seconds longer than on two. A worker started while
others serve (a restart, a new deployment) starts on its cores, so it never takes the
gateway's.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from zhisuan.cluster.base import ReplicaSpec

CPUS_ENV = "ZHISUAN_WORKER_CPUS"
"""Set by the supervisor to the cores a worker is to compute on (``1`` or ``1,3``)."""


def planned() -> frozenset[int] | None:
    """The cores this process is to compute on (:data:`CPUS_ENV`), None if not set."""
    raw = os.environ.get(CPUS_ENV, "").strip()
    if not raw:
        return None
    try:
        cores = frozenset(int(part) for part in raw.split(","))
    except ValueError:
        return None
    return cores or None


def settle() -> None:
    """Move this process, every thread of it, to its planned cores (if it has some)."""
    cores = planned()
    if cores:
        pin(os.getpid(), cores)


@dataclass(frozen=True, slots=True)
class CoreLayout:
    """Which cores the gateway keeps and which the CPU replicas share.

    Attributes:
        gateway: the gateway's cores.
        workers: the cores CPU replicas are dealt, in order.
        every: every core this process could use before pinning (other replicas' set).
    """

    gateway: frozenset[int]
    workers: tuple[int, ...]
    every: frozenset[int]

    def slices(self, count: int) -> list[frozenset[int]]:
        """``count`` slices of :attr:`workers`, contiguous and as even as the count allows.

        With more slices than cores, each slice is one core, dealt round the cores.
        """
        cores = self.workers
        if count <= len(cores):
            return [
                frozenset(cores[i * len(cores) // count : (i + 1) * len(cores) // count])
                for i in range(count)
            ]
        return [frozenset({cores[i % len(cores)]}) for i in range(count)]

    def assign(self, specs: Sequence[ReplicaSpec]) -> dict[str, frozenset[int]]:
        """Cores per replica key: a slice for each CPU replica, every core for the others."""
        pinned = [s.key for s in specs if is_cpu_replica(s)]
        cores = dict(zip(pinned, self.slices(len(pinned)), strict=True)) if pinned else {}
        return {s.key: cores.get(s.key, self.every) for s in specs}


def is_cpu_replica(spec: ReplicaSpec) -> bool:
    """Whether the replica computes on CPU cores (not a GPU, not a remote upstream)."""
    return spec.device == "cpu" and spec.engine != "upstream"


def plan(mode: str, available: Iterable[int] | None = None) -> CoreLayout | None:
    """The core layout for ``mode`` (``auto`` or ``off``), or None when nothing is pinned.

    Args:
        mode: ``auto`` pins when at least two cores are available; ``off`` never does.
        available: the cores to divide (default: those this process may run on).
    """
    if mode == "off":
        return None
    if available is None:
        if not hasattr(os, "sched_getaffinity"):  # not Linux
            return None
        available = os.sched_getaffinity(0)
    cores = sorted(available)
    if len(cores) < 2:
        return None
    keep = 1 if len(cores) < 8 else 2  # one event loop, plus the usage writer on big hosts
    return CoreLayout(
        gateway=frozenset(cores[:keep]), workers=tuple(cores[keep:]), every=frozenset(cores)
    )


def pin(pid: int, cores: Iterable[int]) -> None:
    """Move every thread of process ``pid`` to ``cores`` (threads it starts later follow).

    A thread that ends meanwhile is skipped; a process that is gone raises nothing.
    """
    wanted = set(cores)
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return
    for tid in threads:
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(tid), wanted)


def describe(cores: Iterable[int]) -> str:
    """``0``, ``1-3`` or ``1,3,5-7``: a core set as taskset and lscpu write it."""
    runs: list[list[int]] = []
    for core in sorted(cores):
        if runs and core == runs[-1][-1] + 1:
            runs[-1].append(core)
        else:
            runs.append([core])
    return ",".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)
