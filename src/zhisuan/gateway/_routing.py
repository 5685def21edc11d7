"""Pick a healthy replica of a model: the one with the fewest requests in flight."""

from __future__ import annotations

from zhisuan.cluster import Backend, Replica, ReplicaState
from zhisuan.errors import EngineUnavailable, NotFound, closest


def served_models(backend: Backend) -> list[str]:
    """Names of models with at least one replica (ready or not)."""
    return sorted({r.spec.model for r in backend.replicas()})


def pick_replica(backend: Backend, model: str, exclude: set[str] | None = None) -> Replica:
    """The ready replica of ``model`` with the least outstanding requests.

    Raises:
        NotFound: no replica of ``model`` exists (404 ``model_not_found``).
        EngineUnavailable: replicas exist but none is ready (503).
    """
    replicas = backend.replicas(model)
    if not replicas:
        names = served_models(backend)
        raise NotFound(
            f"The model '{model}' does not exist or is not deployed.",
            suggestions=closest(model, names),
            param="model",
            code="model_not_found",
        )
    ready = [
        r
        for r in replicas
        if r.state is ReplicaState.READY and r.endpoint and r.spec.key not in (exclude or set())
    ]
    if not ready:
        states = ", ".join(sorted({r.state.value for r in replicas}))
        raise EngineUnavailable(
            f"No replica of '{model}' is ready (replicas are {states}); retry shortly.",
            hint="see `zhisuan ps`",
        )
    return min(ready, key=lambda r: r.outstanding)
