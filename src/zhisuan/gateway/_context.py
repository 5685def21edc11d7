"""What the gateway's request handlers share: settings, store, backend, metering."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp

from zhisuan.settings import Settings

if TYPE_CHECKING:
    from zhisuan.cluster import Backend
    from zhisuan.gateway._auth import Principal
    from zhisuan.gateway._exchange import Exchange
    from zhisuan.gateway._meter import Meter
    from zhisuan.store import Store

Admit = Callable[["Principal", "Exchange"], Awaitable[None]]


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
    client: aiohttp.ClientSession
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


def worker_client() -> aiohttp.ClientSession:
    """The pooled client the gateway uses to talk to its workers (call inside the loop).

    aiohttp rather than httpx on this one hot path: its C parser costs the gateway about a
    third of the CPU per proxied request, and that CPU is taken from the engines on the same
    machine (see ``benchmarks/bench_gateway_overhead.py``).
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1024, keepalive_timeout=60.0),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=5.0, sock_read=600.0),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
    )
