"""What the gateway's request handlers share: settings, store, backend and hooks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from zhisuan.settings import Settings

if TYPE_CHECKING:
    from zhisuan.cluster import Backend
    from zhisuan.gateway._exchange import Exchange
    from zhisuan.store import Store


@dataclass(slots=True)
class Gateway:
    """Per-process gateway state, built in the app's lifespan.

    Attributes:
        settings: the platform settings.
        store: durable state.
        backend: where replicas run.
        client: pooled HTTP client for the workers on loopback.
        finish_hooks: called once per finished request with its :class:`Exchange`
            (metering, metrics); a hook must not raise.
    """

    settings: Settings
    store: Store
    backend: Backend
    client: httpx.AsyncClient
    finish_hooks: list[Callable[[Exchange], None]] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)

    def finish(self, exchange: Exchange) -> None:
        for hook in self.finish_hooks:
            hook(exchange)


def worker_client() -> httpx.AsyncClient:
    """The pooled client the gateway uses to talk to its workers."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(connect=5.0, read=600.0, write=60.0, pool=60.0),
        limits=httpx.Limits(max_connections=1024, max_keepalive_connections=256),
        trust_env=False,
    )
