"""Placement and supervision of model replicas (``local`` worker processes)."""

from __future__ import annotations

from zhisuan.cluster.base import Backend, Replica, ReplicaSpec, ReplicaState

__all__ = ["Backend", "Replica", "ReplicaSpec", "ReplicaState"]
