"""Build the gateway's FastAPI app.

The gateway never imports torch or an engine library: replicas run in worker processes
(``zhisuan.cluster``) and the gateway only routes, meters and supervises.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from zhisuan import __version__
from zhisuan.cluster import Backend
from zhisuan.gateway import _errors
from zhisuan.gateway._context import Gateway, worker_client
from zhisuan.gateway._deployments import desired_specs
from zhisuan.gateway._limits import BodyLimit
from zhisuan.gateway.routers import admin, health, openai
from zhisuan.settings import Settings
from zhisuan.store import Store, open_store

logger = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    backend: Backend | None = None,
) -> FastAPI:
    """The gateway app.

    Args:
        settings: platform settings.
        store: an open store (default: opened from ``settings`` at start-up).
        backend: where replicas run (default: the ``local`` backend).

    Returns:
        The FastAPI app; its lifespan starts the replicas of every stored deployment and
        stops them on shutdown.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        the_store = store or open_store(settings)
        if backend is None:
            from zhisuan.cluster.local import LocalBackend

            the_backend: Backend = LocalBackend(settings)
        else:
            the_backend = backend
        gw = Gateway(
            settings=settings, store=the_store, backend=the_backend, client=worker_client()
        )
        app.state.gateway = gw
        for setup in app.state.setups:
            setup(gw)
        await the_backend.apply(desired_specs(the_store))
        try:
            yield
        finally:
            await the_backend.stop()
            await gw.client.aclose()
            if store is None:
                the_store.close()

    app = FastAPI(
        title="zhisuan",
        version=__version__,
        summary="A private OpenAI-compatible Model-as-a-Service",
        lifespan=lifespan,
    )
    app.state.setups = []
    _errors.install(app)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.include_router(health.router)
    app.include_router(openai.router)
    app.include_router(admin.router)
    _mount_optional(app)
    return app


def _mount_optional(app: FastAPI) -> None:
    """Routers of layers that may not be installed in a trimmed build."""
    try:
        from zhisuan.gateway.routers import plan
    except ImportError:  # pragma: no cover - the planner ships with the package
        logger.debug("planner router unavailable")
    else:
        app.include_router(plan.router)
