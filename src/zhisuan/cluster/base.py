"""The cluster backend interface: where replicas run and who keeps them alive.

A backend owns worker processes (or Ray actors) for a set of :class:`ReplicaSpec`. The
gateway tells it the desired set with :meth:`Backend.apply` (reconcile: start what is
missing, stop what is no longer wanted, leave the rest alone) and reads the live state
with :meth:`Backend.replicas`. A backend restarts a worker that dies, with backoff, and
marks it ``restarting`` meanwhile so routing skips it. A spec that changes only in what
the gateway reads (a price, say: :meth:`ReplicaSpec.runs_as`) is taken by the running
replica, with no restart; another change is rolled out replica by replica, a successor
(shown under ``replacing``) taking over from each. A worker taken out of routing (replaced,
undeployed or scaled away) finishes its requests before it stops; a backend that
:class:`Drains` lists it meanwhile, ``draining``, apart from :meth:`Backend.replicas`
(:func:`listing` shows both).

Backends: ``local`` (worker processes on this machine, the default).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable


class ReplicaState(StrEnum):
    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"
    STOPPING = "stopping"  # takes no new request; finishes those it runs, then stops
    DRAINING = "draining"  # likewise, out of the replicas: replaced, undeployed or scaled away
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class ReplicaSpec:
    """One replica the platform should run.

    Attributes:
        model: public model name clients ask for.
        engine: ``transformers``, ``llamacpp`` or ``upstream``.
        device: ``cpu`` or ``cuda:N``.
        model_path: weights location (None for ``upstream``).
        index: replica number within the deployment, from 0.
        options: engine options (JSON-serialisable).
    """

    model: str
    engine: str
    device: str
    model_path: str | None
    index: int = 0
    options: tuple[tuple[str, Any], ...] = ()
    key: str = field(init=False, repr=False, compare=False)
    """``model#index``, the replica's name (made once: a request reads it several times)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.model}#{self.index}")

    def runs_as(self, other: ReplicaSpec) -> bool:
        """Whether a worker started for this spec serves ``other`` as well: they differ at
        most in options only the gateway reads (:data:`GATEWAY_OPTIONS`)."""
        return self == other or replace(self, options=_for_worker(self)) == replace(
            other, options=_for_worker(other)
        )


GATEWAY_OPTIONS = frozenset(
    {
        "price_input_per_mtok",
        "price_output_per_mtok",
        "cost_per_hour",
        "currency",
        "power_w",
        "budget_deadline_s",
    }
)
"""Deployment options the gateway reads and the worker does not (prices, power, the deadline
of requests billed by device time): a change to them alone leaves the replicas running."""


def _for_worker(spec: ReplicaSpec) -> tuple[tuple[str, Any], ...]:
    return tuple((k, v) for k, v in spec.options if k not in GATEWAY_OPTIONS)


@dataclass(slots=True)
class Replica:
    """Live state of one replica, owned and mutated by its backend."""

    spec: ReplicaSpec
    state: ReplicaState = ReplicaState.STARTING
    pid: int | None = None
    endpoint: str | None = None
    ready_since: float | None = None  # monotonic seconds
    restarts: int = 0
    outstanding: int = 0
    last_error: str | None = None
    generation: int = field(default=0)  # bumps on every (re)start
    cpus: tuple[int, ...] | None = None  # the cores it is pinned to (None: not pinned)
    successor: Replica | None = None  # starting with a changed spec, to take over
    log: str | None = None  # the file its worker writes its output to (None: none yet)

    @property
    def uptime_s(self) -> float:
        """Seconds since its worker became ready, for as long as that worker runs: while it
        serves, and while it finishes its requests out of routing (``stopping``,
        ``draining``); 0 while it starts or restarts, and once it stopped."""
        if self.ready_since is None:
            return 0.0
        return time.monotonic() - self.ready_since

    def snapshot(self) -> dict[str, Any]:
        """JSON view used by ``zhisuan ps`` and the admin API."""
        return {
            "model": self.spec.model,
            "replica": self.spec.index,
            "engine": self.spec.engine,
            "state": self.state.value,
            "pid": self.pid,
            "device": self.spec.device,
            "cpus": list(self.cpus) if self.cpus is not None else None,
            "endpoint": self.endpoint,
            "uptime_s": round(self.uptime_s, 1),
            "restarts": self.restarts,
            "outstanding": self.outstanding,
            "last_error": self.last_error,
            "log": self.log,
            "replacing": None if self.successor is None else self.successor.snapshot(),
        }


class Backend(Protocol):
    """Runs replicas and keeps them alive."""

    async def apply(self, specs: list[ReplicaSpec]) -> None:
        """Reconcile the running replicas with ``specs``; returns once changes are started."""
        ...

    def replicas(self, model: str | None = None) -> list[Replica]:
        """Live replicas, optionally of one model."""
        ...

    async def stop(self) -> None:
        """Stop every replica and wait for the processes to exit."""
        ...


@runtime_checkable
class Drains(Protocol):
    """Optional for a :class:`Backend`: it lists the workers it took out of routing."""

    def draining(self) -> list[Replica]:
        """Workers taken out of routing (replaced by a successor, undeployed or scaled away)
        that finish the requests they run before they stop, state ``draining``. They are
        never in :meth:`Backend.replicas`, which routing, ``/health`` and
        ``zhisuan_replica_up`` read (the metrics still count the requests they run)."""
        ...


def listing(backend: Backend) -> list[Replica]:
    """What ``zhisuan ps`` and ``GET /admin/replicas`` show: every replica, each followed by
    the workers of it still draining (where the backend :class:`Drains`), then those of
    replicas no longer wanted."""
    live = backend.replicas()
    if not isinstance(backend, Drains):
        return live
    order = {r.spec.key: i for i, r in enumerate(live)}
    return sorted([*live, *backend.draining()], key=lambda r: order.get(r.spec.key, len(live)))
