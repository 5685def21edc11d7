"""The worker's FastAPI application: thin routers over :class:`Serving`.

The engine loads in a thread after the server starts listening, so the supervisor can
tell "alive and loading" (``GET /health`` → 503 ``{"status": "loading"}``) from "ready"
(200 ``{"status": "ok", …}``) and from "failed" (503 ``{"status": "failed"}``; the CLI
then exits non-zero). Model endpoints answer 503 until the engine is loaded.

An engine whose ``load()`` needs the event loop may define ``async def start(self)``; it is
awaited on the loop once ``load()`` has returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from zhisuan.engines.worker._collect import ClientGone
from zhisuan.engines.worker._errors import install_error_handlers
from zhisuan.engines.worker._registry import AnyEngine
from zhisuan.engines.worker._serving import Serving
from zhisuan.errors import EngineUnavailable, InvalidParameter, NotFound

logger = logging.getLogger(__name__)


class WorkerState:
    """Load state of the worker's one engine.

    Attributes:
        model_name: the public model name (known before loading).
        engine_kind: e.g. ``"transformers"``.
        serving: set once the engine is loaded.
        error: one line saying why loading failed, if it did.
    """

    def __init__(self, model_name: str, engine_kind: str) -> None:
        self.model_name = model_name
        self.engine_kind = engine_kind
        self.serving: Serving | None = None
        self.error: str | None = None

    def require(self) -> Serving:
        if self.serving is None:
            what = f"failed to load: {self.error}" if self.error else "is still loading"
            raise EngineUnavailable(f"model '{self.model_name}' {what}")
        return self.serving


async def _body(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise InvalidParameter(
            "We could not parse the JSON body of your request.", code="invalid_json"
        ) from None


def _router(state: WorkerState) -> APIRouter:
    router = APIRouter()

    @router.get("/health")
    async def health() -> JSONResponse:
        if state.serving is not None:
            return JSONResponse(state.serving.health())
        status = "failed" if state.error else "loading"
        body = {"status": status, "model": state.model_name, "engine": state.engine_kind}
        if state.error:
            body["error"] = state.error
        return JSONResponse(body, status_code=503)

    @router.get("/zhisuan/requests/{request_id}")
    async def request_record(request_id: str, wait: float = 0.0) -> JSONResponse:
        record = await state.require().requests.settled(request_id, min(max(wait, 0.0), 30.0))
        if record is None:
            raise NotFound(f"no record of request {request_id!r}", param="request_id")
        return JSONResponse(record.to_json())

    @router.get("/zhisuan/stats")
    async def stats() -> JSONResponse:
        """Totals of settled generations: what the engine reports it processed."""
        return JSONResponse(dict(state.require().requests.totals))

    @router.get("/v1/models")
    async def models() -> JSONResponse:
        return JSONResponse(state.require().models())

    @router.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        serving = state.require()
        return await serving.chat(request, await _body(request))

    @router.post("/v1/completions")
    async def completions(request: Request) -> Response:
        serving = state.require()
        return await serving.completions(request, await _body(request))

    @router.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        serving = state.require()
        return await serving.embeddings(request, await _body(request))

    return router


def create_app(
    loader: Callable[[], AnyEngine],
    *,
    model_name: str,
    engine_kind: str,
    on_load_failed: Callable[[str], None] | None = None,
    on_loaded: Callable[[], None] | None = None,
    completion_cap: int | None = None,
) -> FastAPI:
    """The worker application for one model.

    Args:
        loader: loads the engine (called once, in a thread, after startup).
        model_name: the public model name, reported by ``/health`` while loading.
        engine_kind: reported by ``/health`` while loading.
        on_load_failed: called with a one-line reason if ``loader`` raises (the CLI
            stops the server and exits non-zero).
        on_loaded: called once the engine is loaded, before the worker serves it (the
            CLI settles the heap: :func:`zhisuan._heap.settle_heap`).
        completion_cap: the most tokens a request without ``max_tokens`` may generate
            (:func:`zhisuan.engines.options.completion_cap`); None: the rest of the context.

    Returns:
        The FastAPI app; ``app.state.worker`` is its :class:`WorkerState`.
    """
    state = WorkerState(model_name, engine_kind)

    async def load() -> None:
        try:
            engine = await asyncio.to_thread(loader)
            start = getattr(engine, "start", None)
            if start is not None:
                await start()
        except Exception as exc:
            state.error = _one_line(exc)
            if not hasattr(exc, "to_body"):  # a bug, not a refusal: keep the traceback
                logger.debug("loading %s failed", model_name, exc_info=exc)
            if on_load_failed is not None:
                on_load_failed(state.error)
            return
        if on_loaded is not None:
            on_loaded()
        state.serving = Serving(engine, completion_cap=completion_cap)
        logger.info("model %s loaded (%s, %s)", model_name, engine.info.engine, engine.info.device)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(load())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if state.serving is not None:
                await state.serving.engine.close()

    app = FastAPI(title=f"zhisuan worker: {model_name}", lifespan=lifespan, docs_url=None)
    app.state.worker = state
    install_error_handlers(app)

    async def on_client_gone(_: Request, __: Exception) -> Response:
        return Response(status_code=499)  # nobody is listening; nginx's "client closed"

    app.add_exception_handler(ClientGone, on_client_gone)
    app.include_router(_router(state))
    return app


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]
