"""What the gateway's request handlers share: settings, store, backend, metering."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp

from zhisuan.gateway._wire import Pool
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
        wire: the lean client of the proxied requests (see ``_wire``).
        meter: usage records, quotas settlement and metrics.
        admit: auth/quota admission of a request (None: everything is admitted).
    """

    settings: Settings
    store: Store
    backend: Backend
    client: aiohttp.ClientSession
    meter: Meter
    admit: Admit | None = None
    wire: Pool = field(default_factory=Pool)
    extras: dict[str, Any] = field(default_factory=dict)

    def finish(self, ex: Exchange) -> None:
        """Account for a finished request; its usage record is durable on return."""
        self.meter.finish(ex)


def worker_client() -> aiohttp.ClientSession:
    """The pooled client the gateway uses for its other calls to workers (inside the loop).

    Proxied requests go through :class:`zhisuan.gateway._wire.Pool` instead.
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1024, keepalive_timeout=60.0),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=5.0, sock_read=600.0),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
    )
