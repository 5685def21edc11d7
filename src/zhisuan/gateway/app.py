"""Build the gateway's FastAPI app.

The gateway never imports torch or an engine library: replicas run in worker processes
(``zhisuan.cluster``) and the gateway only authenticates, admits, routes, meters and
supervises.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator
from datetime import datetime

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from zhisuan import __version__
from zhisuan.cluster import Backend
from zhisuan.gateway import _errors
from zhisuan.gateway._admission import Admission
from zhisuan.gateway._auth import OPEN_PATHS, Authenticator, AuthGuard
from zhisuan.gateway._context import Gateway, worker_client
from zhisuan.gateway._deployments import desired_specs
from zhisuan.gateway._ends import STOPPING, settled
from zhisuan.gateway._express import end_in_flight
from zhisuan.gateway._limits import BodyLimit
from zhisuan.gateway._meter import Meter
from zhisuan.gateway._metrics import Metrics, QuotaCollector
from zhisuan.gateway._quota import QuotaLedger
from zhisuan.gateway._serving import ROUTES, Cycle, HotPath, Start
from zhisuan.gateway._writer import UsageWriter
from zhisuan.gateway.routers import admin, health, openai, plan, usage
from zhisuan.settings import Settings
from zhisuan.store import Store, open_store
from zhisuan.store.journal import JOURNAL_DIR, UsageJournal, replay

SETTLE_S = 10.0
"""How long a stopping gateway waits for the final counts of the requests it cut short."""

logger = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def auth_enabled(settings: Settings) -> bool:
    """Resolve ``settings.auth``: ``auto`` is on unless the gateway listens on loopback."""
    if settings.auth == "on":
        return True
    if settings.auth == "off":
        return False
    return not is_loopback(settings.host)


class GatewayApp(FastAPI):
    """The gateway's FastAPI app, with the OpenAI ``POST`` endpoints on a short path.

    Those requests go to :class:`zhisuan.gateway._serving.HotPath` before FastAPI's
    middleware stack and router; everything else (and the OpenAPI schema, where the same
    endpoints are declared) is FastAPI's.
    """

    hot_path: HotPath

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in ROUTES:
            await self.serve_hot(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    async def serve_hot(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve a request to the hot path that is known to be one (see ``_protocol``)."""
        await self.hot_path(self.state.gateway, scope, receive, send)

    def serve_now(self, cycle: Cycle, start: Start) -> None:
        """Serve a hot path's request whose whole body is in (see ``_protocol``)."""
        self.hot_path.now(self.state.gateway, cycle, start)


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    backend: Backend | None = None,
) -> GatewayApp:
    """The gateway app.

    Args:
        settings: platform settings (``auth`` decides whether keys are required).
        store: an open store (default: opened from ``settings``; closed on shutdown).
        backend: where replicas run (default: the ``local`` backend).

    Returns:
        The FastAPI app; its lifespan starts the replicas of every stored deployment and
        stops them on shutdown.
    """
    own_store = store is None
    the_store = store or open_store(settings)
    authenticator = Authenticator(the_store, settings.admin_key) if auth_enabled(settings) else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if backend is None:
            from zhisuan.cluster.local import LocalBackend

            the_backend: Backend = LocalBackend(settings)
        else:
            the_backend = backend
        ledger = QuotaLedger(lambda sid, now: _baseline(the_store, sid, now))
        journals = settings.home / JOURNAL_DIR
        await asyncio.to_thread(replay, journals, the_store.add_usage)
        writer = UsageWriter(
            the_store.add_usage, UsageJournal(journals), touch=the_store.touch_keys
        )
        if authenticator is not None:
            authenticator.on_used = writer.used
        refusals = None if authenticator is None else authenticator.refusals
        meter = Meter(settings, Metrics(the_backend, refusals), ledger, writer)
        meter.metrics.registry.register(QuotaCollector(ledger.use))
        gw = Gateway(
            settings=settings,
            store=the_store,
            backend=the_backend,
            client=worker_client(),
            meter=meter,
        )
        gw.admit = Admission(gw, ledger)
        gw.extras["auth"] = authenticator
        gw.extras["ledger"] = ledger
        app.state.gateway = gw
        await the_backend.apply(desired_specs(the_store))
        _warn_of_other_currencies(the_store, settings.currency)
        try:
            yield
        finally:
            # the grace period is over (tasks were cancelled): end the express lane's too
            end_in_flight(gw, STOPPING)
            await settled(SETTLE_S)  # the workers give the final counts of requests cut short
            await the_backend.stop()
            await gw.client.close()
            gw.wire.close()
            meter.flush()
            writer.close()
            if own_store:
                the_store.close()

    app = GatewayApp(
        title="zhisuan",
        version=__version__,
        summary="A private OpenAI-compatible Model-as-a-Service",
        lifespan=lifespan,
    )
    _errors.install(app)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    open_paths = OPEN_PATHS if settings.metrics_access == "open" else frozenset({"/health"})
    # outermost: no body is read without a key
    app.add_middleware(AuthGuard, auth=authenticator, open_paths=open_paths)
    app.hot_path = HotPath(authenticator, settings.max_body_bytes)
    app.include_router(health.router)
    app.include_router(openai.router)
    app.include_router(plan.router)
    app.include_router(usage.router)
    app.include_router(admin.router)
    return app


def _baseline(store: Store, sid: str, now: datetime) -> tuple[int, float]:
    """Tokens today and spend this month of a quota scope, from the usage records."""
    kind, _, name = sid.partition(":")
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    if kind == "tenant":
        return store.usage_baseline(tenant=name, day_start=day, month_start=month)
    return store.usage_baseline(key_prefix=name, day_start=day, month_start=month)


def _warn_of_other_currencies(store: Store, currency: str) -> None:
    """Budgets are compared with costs as they are: say which are in another currency."""
    ours = currency.upper()
    for t in store.list_tenants():
        if t.budget is not None and t.currency != ours:
            logger.warning(
                f"tenant {t.name} has a budget of {t.budget:g} {t.currency}, but prices and "
                f"costs are in {ours}: it is kept as {t.budget:g} {ours} (restate it: zhisuan "
                f"tenants set {t.name} --currency {ours} --budget AMOUNT)"
            )
