"""Placement and supervision of model replicas (``local`` worker processes)."""

from __future__ import annotations

from zhisuan.cluster.base import Backend, Drains, Replica, ReplicaSpec, ReplicaState, listing

__all__ = ["Backend", "Drains", "Replica", "ReplicaSpec", "ReplicaState", "listing"]
