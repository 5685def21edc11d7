"""The worker's request logic: OpenAI requests in, engine calls, OpenAI responses out.

Routers (``_app``) only hand the raw body here. :class:`Serving` validates it with the
shared ``zhisuan.protocol`` models, checks the model name and task, sizes the completion
budget against the context, drives the engine and formats the answer. Engines that
implement :class:`PassThrough` get the validated body forwarded instead.

Budget rule (OpenAI's): without ``max_tokens`` a chat completion may use the rest of the
context (a text completion gets 16 tokens, ``null`` or absent); a ``max_tokens`` larger
than the rest is a 400 ``context_length_exceeded``. Where the deployment sets no
``context_length`` the gateway reserves no more than
:data:`~zhisuan.engines.options.UNKNOWN_CONTEXT_COMPLETION` tokens for a request without
``max_tokens``, so such a request stops there (``completion_cap``); one forwarded to a
:class:`PassThrough` states the budget it was reserved (``max_tokens``). A text
completion's ``max_tokens: 0`` (only with ``echo``) generates nothing: its prompt, echoed
and scored if asked, has only to fit the context.

Cancellation: a client that disconnects cancels its generation. Non-stream requests race
the engine against the connection's ``http.disconnect``, and so do streams until their
first event (a stream still queued in the engine is cancelled, not generated for nobody);
from then on a stream closes the engine's iterator when the response ends for any reason
(``_stream.SSEResponse``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from zhisuan.engines._turns import TENANT_HEADER
from zhisuan.engines.base import Delta, Engine, Task
from zhisuan.engines.worker import _format as fmt
from zhisuan.engines.worker import _logprobs
from zhisuan.engines.worker._collect import (
    ClientGone,
    collect,
    first_event,
    generation,
    until_disconnect,
)
from zhisuan.engines.worker._errors import engine_failure, from_validation_error
from zhisuan.engines.worker._format import USAGE_HEADER
from zhisuan.engines.worker._passthrough import PassThrough, ReportsLoad
from zhisuan.engines.worker._registry import AnyEngine
from zhisuan.engines.worker._requests import LoadTracker, RequestLog, RequestRecord
from zhisuan.engines.worker._stream import SSEResponse, aclose, completion_events, relay
from zhisuan.errors import (
    ContextLengthExceeded,
    InvalidParameter,
    NotFound,
    ZhisuanError,
    closest,
)
from zhisuan.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    SamplingParams,
    new_id,
)

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
_M = TypeVar("_M", bound=BaseModel)
_T = TypeVar("_T")


def _stat(stats: Any, name: str, default: float | None) -> Any:
    if isinstance(stats, dict):
        return stats.get(name, default)
    return getattr(stats, name, default)


class Serving:
    """OpenAI endpoints over one loaded engine.

    Args:
        engine: an :class:`Engine` or a :class:`PassThrough`.
        completion_cap: the most tokens a request without ``max_tokens`` may generate
            (:func:`zhisuan.engines.options.completion_cap`); None: the rest of the context.
    """

    def __init__(self, engine: AnyEngine, *, completion_cap: int | None = None) -> None:
        self.engine = engine
        self.info = engine.info
        self.completion_cap = completion_cap
        self.load = LoadTracker()
        self.requests = RequestLog()

    # ---- read-only endpoints ---------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``GET /health`` body of a loaded worker."""
        active, waiting, busy_s = self.load.active, 0, self.load.busy_s
        prefills: int | None = None  # only an engine that batches counts them
        if isinstance(self.engine, ReportsLoad):
            stats = self.engine.stats()
            active = int(_stat(stats, "active", active))
            waiting = int(_stat(stats, "waiting", waiting))
            busy_s = float(_stat(stats, "busy_seconds", busy_s))
            if (counted := _stat(stats, "prefills", None)) is not None:
                prefills = int(counted)
        body: dict[str, Any] = {
            "status": "ok",
            "model": self.info.model,
            "engine": self.info.engine,
            "task": self.info.task,
            "device": self.info.device,
            "context_length": self.info.context_length,
            "active": active,
            "waiting": waiting,
            "busy_s": round(busy_s, 3),
        }
        if prefills is not None:  # how often requests joined the engine's batch
            body["prefills"] = prefills
        return body

    def models(self) -> dict[str, Any]:
        """``GET /v1/models`` body: this replica's one model."""
        card = {"id": self.info.model, "object": "model", "created": 0, "owned_by": "zhisuan"}
        return {"object": "list", "data": [card]}

    # ---- generation ------------------------------------------------------------------

    async def chat(self, request: Request, body: Any) -> Response:
        """``POST /v1/chat/completions``."""
        req = self._validate(ChatCompletionRequest, body)
        if isinstance(self.engine, PassThrough):
            return await self._forward(request, "/chat/completions", body, req.stream, req)
        engine = self._engine_for("chat")
        _logprobs.check(req, self.info)
        prompt = engine.render_chat(req.plain_messages())
        job = self._job("chat", "chatcmpl", request, req)
        params = self._params(engine, request, prompt, req.requested_max_tokens(), req, "messages")
        return await self._generate(request, engine, job, prompt, params, bool(req.stream))

    async def completions(self, request: Request, body: Any) -> Response:
        """``POST /v1/completions``."""
        req = self._validate(CompletionRequest, body)
        if isinstance(self.engine, PassThrough):
            return await self._forward(request, "/completions", body, req.stream, req)
        engine = self._engine_for("chat")
        _logprobs.check(req, self.info)
        prompt = req.prompt_text()
        job = self._job("completion", "cmpl", request, req, len(prompt))
        params = self._params(engine, request, prompt, req.max_tokens, req, "prompt")
        echo = prompt if req.echo else ""
        return await self._generate(request, engine, job, prompt, params, bool(req.stream), echo)

    async def embeddings(self, request: Request, body: Any) -> Response:
        """``POST /v1/embeddings``."""
        req = self._validate(EmbeddingRequest, body)
        if isinstance(self.engine, PassThrough):
            answer = await self._tracked(request, self.engine.forward_json("/embeddings", body))
            return JSONResponse(answer)
        engine = self._engine_for("embedding")
        tenant = request.headers.get(TENANT_HEADER, "")
        result = await self._tracked(request, engine.embed(req.inputs(), tenant))
        if req.dimensions is not None and result.vectors:
            native = len(result.vectors[0])
            if req.dimensions != native:
                raise InvalidParameter(
                    f"this model's embeddings have {native} dimensions; "
                    f"dimensions={req.dimensions} is not supported",
                    param="dimensions",
                )
        data = [
            fmt.embedding_item(i, vec, req.encoding_format) for i, vec in enumerate(result.vectors)
        ]
        use = {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}
        return JSONResponse(
            {"object": "list", "data": data, "model": self.info.model, "usage": use}
        )

    # ---- helpers ---------------------------------------------------------------------

    def _validate(self, model: type[_M], body: Any) -> _M:
        try:
            req = model.model_validate(body)
        except ValidationError as exc:
            raise from_validation_error(exc, model) from None
        name = getattr(req, "model", None)
        if name != self.info.model:
            raise NotFound(
                f"The model '{name}' does not exist; this worker serves '{self.info.model}'.",
                param="model",
                code="model_not_found",
                suggestions=closest(str(name), [self.info.model]),
            )
        return req

    def _engine_for(self, task: Task) -> Engine:
        engine = self.engine
        assert isinstance(engine, Engine)
        if self.info.task != task:
            what = "chat and text completions" if task == "chat" else "embeddings"
            raise InvalidParameter(
                f"The model '{self.info.model}' is a {self.info.task} model and does not "
                f"support {what}.",
                param="model",
                code="unsupported_task",
            )
        return engine

    def _job(
        self,
        kind: fmt.Kind,
        prefix: str,
        request: Request,
        req: ChatCompletionRequest | CompletionRequest,
        prompt_chars: int = 0,
    ) -> fmt.Job:
        always = request.headers.get(USAGE_HEADER, "").lower() == "always"
        response_id = new_id(prefix)
        return fmt.Job(
            kind=kind,
            id=response_id,
            created=int(time.time()),
            model=self.info.model,
            include_usage=req.include_usage or always,
            usage_field=req.include_usage,
            request_id=request.headers.get(REQUEST_ID_HEADER) or response_id,
            usage_comments=always,
            logprobs=req.wanted_logprobs() is not None,
            prompt_chars=prompt_chars,
        )

    def _params(
        self,
        engine: Engine,
        request: Request,
        prompt: str,
        requested: int | None,
        req: ChatCompletionRequest | CompletionRequest,
        param: str,
    ) -> SamplingParams:
        limit = self.info.context_length
        prompt_tokens = engine.count_tokens(prompt)
        remaining = limit - prompt_tokens
        if requested == 0:  # the prompt echoed, or scored: it only has to fit
            too_long = remaining < 0
        else:
            too_long = remaining <= 0 or (requested is not None and requested > remaining)
        if too_long:
            exc = ContextLengthExceeded(
                prompt_tokens=prompt_tokens, limit=limit, requested=requested or 0
            )
            exc.param = param
            raise exc
        if requested is None:
            cap = self.completion_cap
            requested = remaining if cap is None else min(remaining, cap)
        return SamplingParams(
            max_tokens=requested,
            temperature=1.0 if req.temperature is None else req.temperature,
            top_p=1.0 if req.top_p is None else req.top_p,
            seed=req.seed,
            presence_penalty=req.presence_penalty or 0.0,
            frequency_penalty=req.frequency_penalty or 0.0,
            stop=req.stop_list(),
            ignore_eos=req.ignore_eos,
            logprobs=req.wanted_logprobs(),
            prompt_logprobs=isinstance(req, CompletionRequest) and req.wanted_prompt_logprobs(),
            tenant=request.headers.get(TENANT_HEADER, ""),
        )

    async def _generate(
        self,
        request: Request,
        engine: Engine,
        job: fmt.Job,
        prompt: str,
        params: SamplingParams,
        stream: bool,
        echo: str = "",
    ) -> Response:
        record = self.requests.start(job.request_id)
        if not stream:
            work = collect(engine, job, prompt, params, echo, record)
            answer = await self._tracked(request, work)
            headers = fmt.answer_headers(job, answer, record.first_token_at)
            return JSONResponse(answer, headers=headers)
        self.load.enter()
        deltas: AsyncIterator[Delta] | None = None
        try:
            deltas = generation(engine, prompt, params, job.request_id)  # may validate, raise
            first = await first_event(request, deltas)
        except BaseException as exc:
            failed = isinstance(exc, Exception) and not isinstance(exc, ClientGone)
            record.end("failed" if failed else "cancelled")
            if deltas is not None:
                await aclose(deltas)
            self.load.exit()
            if failed and not isinstance(exc, ZhisuanError):
                raise engine_failure(exc, job.request_id) from exc
            raise
        events = completion_events(job, first, deltas, record, echo)
        return SSEResponse(events, on_close=self._closer(deltas, record))

    async def _forward(
        self,
        request: Request,
        path: str,
        body: dict[str, Any],
        stream: bool | None,
        req: ChatCompletionRequest | CompletionRequest,
    ) -> Response:
        engine = self.engine
        assert isinstance(engine, PassThrough)
        body = self._budgeted(body, req)
        if not stream:
            return JSONResponse(await self._tracked(request, engine.forward_json(path, body)))
        always = request.headers.get(USAGE_HEADER, "").lower() == "always"
        self.load.enter()
        events: AsyncIterator[bytes] | None = None
        try:
            events = engine.forward_stream(path, body, include_usage=req.include_usage or always)
            first = await first_event(request, events)
        except BaseException as exc:
            if events is not None:
                await aclose(events)
            self.load.exit()
            if isinstance(exc, Exception) and not isinstance(exc, (ZhisuanError, ClientGone)):
                raise engine_failure(exc, path) from exc
            raise
        return SSEResponse(relay(first, events, path), on_close=self._closer(events, None))

    def _budgeted(
        self, body: dict[str, Any], req: ChatCompletionRequest | CompletionRequest
    ) -> dict[str, Any]:
        """``body`` stating the completion budget the gateway reserved, where it states none
        (the protocol's default, else :attr:`completion_cap`): an upstream's own default may
        be more, and it would be generated and billed past the reservation."""
        if body.get("max_tokens") is not None or body.get("max_completion_tokens") is not None:
            return body
        if isinstance(req, ChatCompletionRequest):
            budget = req.requested_max_tokens()
        else:
            budget = req.max_tokens
        if budget is None:
            budget = self.completion_cap
        return body if budget is None else {**body, "max_tokens": budget}

    def _closer(
        self, iterator: AsyncIterator[Any], record: RequestRecord | None
    ) -> Callable[[], Awaitable[None]]:
        async def close() -> None:
            await aclose(iterator)
            if record is not None:
                record.end("cancelled")  # no-op if it finished or failed first
            self.load.exit()

        return close

    async def _tracked(self, request: Request, work: Awaitable[_T]) -> _T:
        """Await ``work`` counted as in flight; cancel it if the client disconnects."""
        self.load.enter()
        try:
            return await until_disconnect(request, work)
        except (ClientGone, ZhisuanError):
            raise
        except Exception as exc:
            raise engine_failure(exc, request.url.path) from exc
        finally:
            self.load.exit()
