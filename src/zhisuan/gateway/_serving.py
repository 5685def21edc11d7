"""The OpenAI endpoints' hot path: authenticate, validate, admit, forward, meter.

:class:`HotPath` serves ``POST`` on the three OpenAI endpoints straight from the ASGI
scope. :class:`zhisuan.gateway.app.GatewayApp` hands it those requests before FastAPI's
middleware, routing and dependency machinery: every proxied request pays the gateway's
CPU, and on a small machine that CPU is taken from the engines. It applies the guards the
rest of the app applies (the key check, the body limit), validates against the shared
:mod:`zhisuan.protocol` models (a bad field is a 400 naming its ``param``), forwards the
raw bytes unchanged and answers through ASGI ``send``. :meth:`HotPath.now` does the same
for a request whose whole body is in, from the protocol's parser callback: on the express
lane (``_express``) for a whole answer, else on a task with what it already did. A caller
in good standing (``_standing``) has its request sent to the replica before the
validation and the admission, which then run while the replica works
(:meth:`HotPath._ahead`). The routes in ``routers/openai.py`` declare the same endpoints
for the OpenAPI schema.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from zhisuan.errors import InvalidParameter, ZhisuanError
from zhisuan.gateway._admission import refuse
from zhisuan.gateway._auth import OFF, Authenticator, Principal
from zhisuan.gateway._context import Gateway
from zhisuan.gateway._errors import invalid_from_validation
from zhisuan.gateway._exchange import Exchange
from zhisuan.gateway._express import Express, Sent, send_stream, take_back
from zhisuan.gateway._limits import ClientGone, read_body, too_large
from zhisuan.gateway._proxy import forward
from zhisuan.gateway._reply import error_answer, send_error
from zhisuan.gateway._standing import Standing, peek
from zhisuan.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest

logger = logging.getLogger(__name__)

ROUTES: dict[str, tuple[str, type[BaseModel]]] = {
    "/v1/chat/completions": ("chat.completions", ChatCompletionRequest),
    "/v1/completions": ("completions", CompletionRequest),
    "/v1/embeddings": ("embeddings", EmbeddingRequest),
}
"""Path → (endpoint, request model) of the requests :class:`HotPath` serves."""
PATHS: dict[str, str] = {endpoint: path for path, (endpoint, _) in ROUTES.items()}
_INTERNAL = ZhisuanError("internal server error")
_PROCESS_ID = secrets.token_hex(8)
_REQUEST_IDS = (f"req-{_PROCESS_ID}{n:08x}" for n in itertools.count(1))
"""Request ids: random per process, then a counter (the id is the usage record's key)."""
Start = Callable[[ASGIApp], None]
"""Starts a request's task with an ASGI app (see ``_protocol``)."""


class Cycle(Protocol):
    """A request whose whole body is in (``_protocol._HotCycle``)."""

    scope: Any
    on_lost: Callable[[], None] | None

    def take_body(self) -> bytes: ...

    def answer(self, status: int, headers: Any, body: bytes) -> None: ...


def gateway_of(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


class HotPath:
    """Serve one ``POST`` to a path of :data:`ROUTES`.

    Args:
        auth: resolves keys (None: auth is off, every caller is anonymous).
        body_limit: the largest request body accepted, in bytes.
    """

    def __init__(self, auth: Authenticator | None, body_limit: int) -> None:
        self._auth = auth
        self._limit = body_limit
        self._standing = Standing()

    async def __call__(self, gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
        async def serve() -> None:
            principal = OFF if self._auth is None else self._auth.check(scope)
            body = b""
            try:
                body = await read_body(scope, receive, self._limit)
                endpoint, parsed = self._parse(scope, body)
            except ZhisuanError as err:
                self._standing.refused(principal, err)
                _refused(gw, principal, scope, body, err)
                raise
            await handle(
                gw, principal, endpoint, parsed, body, receive, send, standing=self._standing
            )

        await _guarded(scope, send, serve())

    def now(self, gw: Gateway, cycle: Cycle, start: Start) -> None:
        """Serve a request whose whole body is in, from the parser's callback that
        completed it: a whole answer on the express lane (``_express``) when it can,
        sent ahead of its checks (:meth:`_ahead`) when its caller is in good standing,
        else on a task (``start``), with nothing done twice."""
        scope, body = cycle.scope, cycle.take_body()
        try:
            principal = OFF if self._auth is None else self._auth.check(scope)
        except Exception as exc:
            _answer_error(cycle, scope, exc)
            return
        try:
            check = getattr(gw.admit, "check", None)
            fits = len(body) <= self._limit
            if fits and self._ahead(gw, cycle, principal, scope, body, start, check):
                return
            endpoint, parsed = self._read(gw, principal, scope, body)
            if _stream(parsed) or (gw.admit is not None and check is None):
                standing = self._standing

                def work(r: Receive, s: Send) -> Awaitable[None]:
                    return handle(gw, principal, endpoint, parsed, body, r, s, standing=standing)

                start(_task(work))
                return
            ex = exchange(endpoint, parsed, len(body))
            if check is not None:
                check(principal, ex)
            else:
                gw.meter.begin(ex)
        except Exception as exc:
            if isinstance(exc, ZhisuanError):
                self._standing.refused(principal, exc)
            _answer_error(cycle, scope, exc)
            return
        lane = _lane(gw, cycle, start, ex, body)
        if "deadline" in ex.context:  # a task ends it at its deadline; the lane would not
            lane.to_task()
            return
        try:
            taken = lane.start()
        except Exception:  # in a parser's callback: never let it reach the parser
            logger.exception("unhandled error on POST %s", scope["path"])
            ex.close("error", 500)
            gw.finish(ex)
            cycle.answer(*error_answer(_INTERNAL))
            return
        if taken:
            cycle.on_lost = lane.client_gone
        else:
            lane.to_task()

    def _ahead(
        self,
        gw: Gateway,
        cycle: Cycle,
        principal: Principal,
        scope: Scope,
        body: bytes,
        start: Start,
        check: Callable[[Principal, Exchange], None] | None,
    ) -> bool:
        """Send a request to a replica first, then validate and admit it (``check``: the
        admission's synchronous step, if it has one).

        A gateway with no request in flight has likely slept since the last one: what
        it does before the request reaches the replica adds to the request's latency on
        cold caches, while what it does after runs as the replica works. So a request
        that finds the gateway idle, from a caller authenticated, allowed the model it
        names and not refused lately, goes to the replica at once; the validation and
        the admission follow in the same callback, with no other request in between, so
        quotas hold as before. A refusal withdraws the request (its worker connection is
        closed, which cancels it there) and puts the caller on the careful way, checks
        first, for :data:`WARY_S`. A whole answer then comes on the express lane; a
        stream's, on a task (``forward``'s ``sent``). Under load the checks come first,
        as they did before: a request sent at once would not start sooner in a busy
        replica's batches, and at 64 clients sending first showed no gain
        (``docs/gateway-overhead.md``).

        Returns:
            True if the request was sent ahead; False, with nothing done, if it takes
            the careful way.

        Raises:
            ZhisuanError: the checks refused the request (withdrawn, not answered).
        """
        if (gw.admit is not None and check is None) or not gw.meter.idle():
            return False
        if not self._standing.good(principal):
            return False
        peeked = peek(body)
        if peeked is None or not principal.allows(peeked[0]):
            return False
        model, stream = peeked
        if principal.budgeted and _deadline(gw, principal, model) is not None:
            return False  # it goes on a task, which ends it at its deadline
        path = scope["path"]
        endpoint = ROUTES[path][0]
        ex = Exchange(next(_REQUEST_IDS), endpoint, model, stream=stream)
        ex.context["tenant"] = principal.tenant  # (admission sets these too)
        ex.context["line"] = principal.line  # its line at the worker, and the tenant's weight
        lane = sent = None
        if stream:
            sent = send_stream(gw, ex, path, body)
        else:
            lane = _lane(gw, cycle, start, ex, body)
        if sent is None and (lane is None or not lane.start()):
            return False
        try:
            _, parsed = self._read(gw, principal, scope, body)
            if getattr(parsed, "model", None) != model or _stream(parsed) != stream:
                _withdraw(gw, lane, sent)  # the two parsers read the body differently
                return False
            ex.context["request"] = parsed
            ex.context["body_bytes"] = len(body)
            if check is not None:
                check(principal, ex)
            else:
                gw.meter.begin(ex)
        except Exception:
            _withdraw(gw, lane, sent)
            raise
        if lane is not None:
            cycle.on_lost = lane.client_gone
            return True
        usage = bool(getattr(parsed, "include_usage", False))

        def relay(r: Receive, s: Send) -> Awaitable[None]:
            return forward(gw, path, body, ex, r, s, include_usage=usage, sent=sent)

        start(_task(relay))
        return True

    def _read(
        self, gw: Gateway, principal: Principal, scope: Scope, body: bytes
    ) -> tuple[str, BaseModel]:
        """The endpoint and the request ``body`` holds; a body refused (too large, not
        valid) is metered (:func:`_refused`) before the refusal is raised."""
        try:
            if len(body) > self._limit:
                raise too_large(self._limit)
            return self._parse(scope, body)
        except ZhisuanError as err:
            _refused(gw, principal, scope, body if len(body) <= self._limit else b"", err)
            raise

    @staticmethod
    def _parse(scope: Scope, body: bytes) -> tuple[str, BaseModel]:
        endpoint, model = ROUTES[scope["path"]]
        try:
            return endpoint, model.model_validate_json(body)
        except ValidationError as exc:
            raise _invalid(exc, model) from None


async def handle(
    gw: Gateway,
    principal: Principal,
    endpoint: str,
    parsed: BaseModel,
    body: bytes,
    receive: Receive,
    send: Send,
    *,
    standing: Standing | None = None,
) -> None:
    """Serve one OpenAI endpoint: admit, forward to a replica, meter.

    Args:
        gw: the gateway state.
        principal: who is calling.
        endpoint: a key of :data:`PATHS`.
        parsed: the validated body.
        body: the raw body, forwarded unchanged.
        receive, send: the client's ASGI channels.
        standing: told of a refusal, if given.

    Raises:
        ZhisuanError: the request was refused before anything was sent.
    """
    ex = exchange(endpoint, parsed, len(body))
    if gw.admit is not None:
        try:
            await gw.admit(principal, ex)
        except ZhisuanError as err:
            if standing is not None:
                standing.refused(principal, err)
            raise
    else:
        gw.meter.begin(ex)
    include_usage = bool(getattr(parsed, "include_usage", False))
    await forward(gw, PATHS[endpoint], body, ex, receive, send, include_usage=include_usage)


def _deadline(gw: Gateway, principal: Principal, model: str) -> float | None:
    deadline: Callable[[Principal, str], float | None] | None = getattr(gw.admit, "deadline", None)
    return None if deadline is None else deadline(principal, model)


def _refused(gw: Gateway, who: Principal, scope: Scope, body: bytes, err: ZhisuanError) -> None:
    """Record a request refused for its body: who sent it, the model its bytes name (if
    they name one plainly), no tokens (``_admission.refuse``)."""
    model, stream = peek(body) or ("", False)
    refuse(gw, who, Exchange(next(_REQUEST_IDS), ROUTES[scope["path"]][0], model, stream), err)


def _stream(parsed: BaseModel) -> bool:
    return bool(getattr(parsed, "stream", False))


def _withdraw(gw: Gateway, lane: Express | None, sent: Sent | None) -> None:
    """Take back a request sent ahead of its checks."""
    if lane is not None:
        lane.withdraw()
    if sent is not None:
        take_back(gw, sent)


def _lane(gw: Gateway, cycle: Cycle, start: Start, ex: Exchange, body: bytes) -> Express:
    """The express lane for ``ex``, with the task path to fall back on."""
    path = PATHS[ex.endpoint]

    def on_task() -> None:
        cycle.on_lost = None  # the task watches the client itself
        start(_task(lambda r, s: forward(gw, path, body, ex, r, s)))

    return Express(gw, ex, path, body, cycle.answer, on_task)


def exchange(endpoint: str, parsed: BaseModel, body_bytes: int) -> Exchange:
    """The record of a new request to ``endpoint`` (its body ``body_bytes`` long)."""
    ex = Exchange(
        request_id=next(_REQUEST_IDS),
        endpoint=endpoint,
        model=str(getattr(parsed, "model", "")),
        stream=bool(getattr(parsed, "stream", False)),
    )
    ex.context["request"] = parsed
    ex.context["body_bytes"] = body_bytes
    return ex


def _task(work: Callable[[Receive, Send], Awaitable[None]]) -> ASGIApp:
    """An ASGI app that does ``work`` on the task path, its errors answered."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await _guarded(scope, send, work(receive, send))

    return app


async def _guarded(scope: Scope, send: Send, work: Awaitable[None]) -> None:
    """Await ``work``, answering a refusal or an unexpected error as an OpenAI error."""
    try:
        await work
    except ZhisuanError as err:  # raised only before the answer starts
        await send_error(send, err)
    except ClientGone:
        pass
    except Exception:
        logger.exception("unhandled error on POST %s", scope["path"])
        with contextlib.suppress(RuntimeError):  # the answer had started: uvicorn closes it
            await send_error(send, _INTERNAL)


def _answer_error(cycle: Cycle, scope: Scope, exc: Exception) -> None:
    """Answer a refusal, or an unexpected error as a 500 (logged)."""
    if isinstance(exc, ZhisuanError):
        cycle.answer(*error_answer(exc))
        return
    logger.exception("unhandled error on POST %s", scope["path"], exc_info=exc)
    cycle.answer(*error_answer(_INTERNAL))


def _invalid(exc: ValidationError, model: type[BaseModel]) -> InvalidParameter:
    errors = exc.errors()
    if errors and errors[0].get("type") == "json_invalid":
        return InvalidParameter(f"We could not parse the JSON body of your request: {exc}.")
    return invalid_from_validation(exc, model)  # worded as a worker words it
