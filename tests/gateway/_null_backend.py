"""A cluster backend that keeps the desired replicas as specs and runs nothing."""

from __future__ import annotations

from zhisuan.cluster import Replica, ReplicaSpec


class NullBackend:
    """Keeps the desired replicas as specs; runs nothing."""

    def __init__(self) -> None:
        self.specs: list[ReplicaSpec] = []

    async def apply(self, specs: list[ReplicaSpec]) -> None:
        self.specs = list(specs)

    def replicas(self, model: str | None = None) -> list[Replica]:
        return []

    async def stop(self) -> None:
        return None
