"""Turn the stored deployments into the replica specs the backend should run."""

from __future__ import annotations

from zhisuan.cluster import ReplicaSpec
from zhisuan.store import Store


def desired_specs(store: Store) -> list[ReplicaSpec]:
    """One :class:`ReplicaSpec` per replica of every stored deployment."""
    models = {m.name: m for m in store.list_models()}
    specs: list[ReplicaSpec] = []
    for dep in store.list_deployments():
        model = models.get(dep.model_name)
        options = dict(dep.options or {})
        if model is not None:
            options.setdefault("task", model.task)
            if model.context_length:
                options.setdefault("context_length", model.context_length)
        path = model.path if model is not None else None
        frozen = tuple(sorted(options.items()))
        specs.extend(
            ReplicaSpec(
                model=dep.model_name,
                engine=dep.engine,
                device=dep.device,
                model_path=path,
                index=i,
                options=frozen,
            )
            for i in range(dep.replicas)
        )
    return specs
