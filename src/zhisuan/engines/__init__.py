"""Inference engines, each run inside its own worker process (see ``base``)."""

from __future__ import annotations

from zhisuan.engines.base import Delta, Embeddings, Engine, EngineInfo

__all__ = ["Delta", "Embeddings", "Engine", "EngineInfo"]
