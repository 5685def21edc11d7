"""What the gateway's request handlers share: settings, store, backend, metering."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from zhisuan.settings import Settings

if TYPE_CHECKING:
    from fastapi import Request

    from zhisuan.cluster import Backend
    from zhisuan.gateway._exchange import Exchange
    from zhisuan.gateway._meter import Meter
    from zhisuan.store import Store

Admit = Callable[["Request", "Exchange"], Awaitable[None]]


@dataclass(slots=True)
class Gateway:
    """Per-process gateway state, built in the app's lifespan.

    Attributes:
        settings: the platform settings.
        store: durable state.
        backend: where replicas run.
        client: pooled HTTP client for the workers on loopback.
        meter: usage records, quotas settlement and metrics.
        admit: auth/quota admission of a request (None: everything is admitted).
    """

    settings: Settings
    store: Store
    backend: Backend
    client: httpx.AsyncClient
    meter: Meter
    admit: Admit | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def finish(self, ex: Exchange) -> None:
        """Account for a finished request without waiting for its record to be stored."""
        self.meter.finish(ex)

    async def finish_durably(self, ex: Exchange) -> None:
        """Account for a finished request and wait until its usage record is committed."""
        fut = self.meter.finish(ex)
        if fut is not None:
            await asyncio.wrap_future(fut)


def worker_client() -> httpx.AsyncClient:
    """The pooled client the gateway uses to talk to its workers."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(connect=5.0, read=600.0, write=60.0, pool=60.0),
        limits=httpx.Limits(max_connections=1024, max_keepalive_connections=256),
        trust_env=False,
    )
