"""Forward a validated request to a replica and relay the answer, metering as it passes.

Answers go to the client through ASGI ``send`` directly (see ``_reply``). Streams are
relayed as they arrive, every complete SSE event of a read in one write, and metered on
the way (first token time, token counts; see ``_sse``).

How a request ends decides its usage record: a finished answer is recorded durably
*before* the client sees its end (``[DONE]`` or the JSON body); a client that goes away
(streaming or not) cancels the request's task, which closes the worker connection and so
cancels the generation there, and the record takes the worker's final count; a worker
that dies mid-stream becomes an error event on the client's stream and the record keeps
the tokens relayed until then. A request the gateway itself cuts short (it is stopping and
its grace period is over, or a fault of its own) is metered as an error in the same way as
a client that leaves; a stopping gateway's client gets a 503 ``gateway_stopping`` (on a
stream, an error event). The
express lane (``_express``) meters a whole answer and a client that leaves with the same
functions (``_ends``). A request billed by device time for a caller with a money budget
carries a deadline (``_admission``): when it is up, the request is ended like a client that
left, its share of the device stops there, and the client gets a 504 (on a stream, an error
event).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING

from starlette.types import Message, Receive, Send

from zhisuan.cluster import Replica
from zhisuan.errors import DeadlineExceeded, EngineUnavailable, NotFound, ZhisuanError
from zhisuan.gateway._context import Gateway
from zhisuan.gateway._ends import STOPPING, address, answered, settle_abort, worker_headers
from zhisuan.gateway._exchange import Exchange
from zhisuan.gateway._reply import SSE_HEADERS, send_error, send_json
from zhisuan.gateway._routing import pick_replica
from zhisuan.gateway._sse import DONE_EVENT, StreamMeter
from zhisuan.gateway._wire import Response

if TYPE_CHECKING:
    from zhisuan.gateway._express import Sent

logger = logging.getLogger(__name__)

WATCH_AFTER_S = 0.05
"""How far into a request the gateway starts watching for the client leaving."""


async def forward(
    gw: Gateway,
    path: str,
    body: bytes,
    ex: Exchange,
    receive: Receive,
    send: Send,
    *,
    include_usage: bool = False,
    sent: Sent | None = None,
) -> None:
    """Send ``body`` to ``path`` on a replica of ``ex.model`` and relay the answer.

    Args:
        gw: the gateway state.
        path: worker path, e.g. ``/v1/chat/completions``.
        body: the client's JSON body, already validated.
        ex: the exchange record; it is metered exactly once, however the request ends.
        receive, send: the client's ASGI channels (the body already read).
        include_usage: the client asked for the usage chunk on a stream.
        sent: the replica and connection the request was already written to, if it was
            (``_express.send_stream``).

    Raises:
        NotFound, EngineUnavailable: no replica could take the request (nothing was sent).
    """
    call = _Call(gw, ex, receive)
    deadline: float | None = ex.context.get("deadline")
    timer = None if deadline is None else call.expire_after(deadline)
    try:
        upstream = await call.open(path, body, sent)
        if upstream.status == 200 and ex.stream:
            await call.relay(upstream, send, include_usage)
        else:
            await call.answer(upstream, send)
    except asyncio.CancelledError:  # the request ends here, its ending handled
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        if call.gone:
            call.cut_short("client_abort", 499)
        else:  # its deadline, or the gateway stopping: the client is told why
            await call.end_with(send, _deadline(deadline or 0.0) if call.expired else STOPPING)
    except Exception as exc:  # a fault of the gateway's: the request is metered all the same
        call.cut_short("error", 500, f"gateway fault: {exc!r}")
        raise
    finally:
        if timer is not None:
            timer.cancel()
        call.release()


class _Call:
    """One request's trip to a replica: the replica, its answer, and the client's presence.

    While the answer is not complete, a waiter on ``receive`` cancels the request's task if
    the client disconnects (uvicorn's ``send`` would drop the bytes silently). The waiter
    (a task of its own) starts :data:`WATCH_AFTER_S` into the request, so a request answered
    sooner never pays for it; a client that left earlier is seen then, as ``receive``
    answers at once. The bookkeeping of a request on its way (the replica's share, the
    record's known fields, the watch) waits until it is written (:meth:`_sent`): the
    replica works meanwhile.
    """

    __slots__ = (
        "_answered",
        "_receive",
        "_task",
        "_waiter",
        "_watch",
        "ex",
        "expired",
        "gone",
        "gw",
        "replica",
        "stream",
        "upstream",
    )

    def __init__(self, gw: Gateway, ex: Exchange, receive: Receive) -> None:
        self.gw = gw
        self.ex = ex
        self.replica: Replica | None = None
        self.upstream: Response | None = None
        self.gone = False
        self.expired = False
        self._answered = False
        self.stream: StreamMeter | None = None
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._receive = receive
        self._waiter: asyncio.Future[Message] | None = None
        self._watch: asyncio.TimerHandle | None = None

    def _sent(self, replica: Replica) -> None:
        """The request is written to ``replica``: begin its share of the replica's time,
        encode its record's known fields, and watch the client."""
        if self.replica is not replica or self.ex.context.get("metered"):
            return  # that replica failed, or the request was metered, before this ran
        self.gw.meter.start(self.ex, replica)
        self.gw.meter.prepare(self.ex)
        if not self._answered:
            self._watch = self._task.get_loop().call_later(WATCH_AFTER_S, self._start_waiter)

    def _start_waiter(self) -> None:
        self._waiter = asyncio.ensure_future(self._receive())
        self._waiter.add_done_callback(self._on_receive)

    def _on_receive(self, waiter: asyncio.Future[Message]) -> None:
        if not self._answered and not waiter.cancelled():
            self.gone = True
            self._task.cancel()

    def answered(self) -> None:
        """The answer is complete: a disconnect from now on is no abort."""
        self._answered = True
        self._unwatch()

    def _unwatch(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._waiter is not None and not self._waiter.done():
            self._waiter.cancel()

    def release(self) -> None:
        self.answered()
        if self.replica is not None:
            self.replica.outstanding -= 1
            self.replica = None
        if self.upstream is not None:
            self.upstream.close()  # a no-op once read to the end; else it cancels the generation
            self.upstream = None

    async def open(self, path: str, body: bytes, sent: Sent | None = None) -> Response:
        """Pick a replica and send; a worker that refuses the connection is skipped once
        (by its identity, not its replica's key: a successor that took over that replica
        meanwhile is tried). A request already ``sent`` waits for its answer there first; a
        pooled connection the worker had just closed sends it again."""
        gw, ex = self.gw, self.ex
        headers = worker_headers(ex)
        tried: list[tuple[Replica, int]] = []  # the workers that failed: (replica, generation)
        if sent is not None:
            replica, conn = sent
            ex.replica = replica.spec.key
            self.replica = replica
            self._sent(replica)
            try:
                self.upstream = await gw.wire.answer(conn)
                return self.upstream
            except OSError as exc:
                replica.outstanding -= 1
                self.replica = None
                gw.meter.abandon(ex)
                self._unwatch()
                if conn.received:  # the replica failed: another one, if there is one
                    tried.append((replica, replica.generation))
                    logger.warning("request %s: replica failed: %s", ex.request_id, exc)
        while True:
            try:
                exclude = _workers_of(gw, ex.model, tried) if tried else None
                replica = pick_replica(gw.backend, ex.model, exclude=exclude)
            except EngineUnavailable as none_ready:
                err = none_ready
                if tried:  # we already had a replica, and it failed
                    err = EngineUnavailable(f"The replica serving '{ex.model}' failed.")
                ex.error = err.message
                ex.close("worker_error" if tried else "error", err.status_code)
                gw.finish(ex)
                raise err from None
            except Exception as exc:  # no such model (refused: no replica saw it), or a fault
                ex.error = str(exc)
                ex.close("rejected" if isinstance(exc, NotFound) else "error", _status(exc))
                gw.finish(ex)
                raise
            ex.replica = replica.spec.key
            replica.outstanding += 1
            self.replica = replica
            try:
                host, port = address(replica.endpoint)
                # runs once the request is written and this task waits for the answer
                asyncio.get_running_loop().call_soon(self._sent, replica)
                self.upstream = await gw.wire.post(
                    host, port, path, body, headers, whole=not ex.stream
                )
                return self.upstream
            except OSError as exc:  # refused, reset, timed out, closed before answering
                replica.outstanding -= 1
                self.replica = None
                gw.meter.abandon(ex)
                tried.append((replica, replica.generation))
                logger.warning("request %s: replica %s failed: %s", ex.request_id, ex.replica, exc)

    async def answer(self, upstream: Response, send: Send) -> None:
        """Relay a whole (non-stream or error) answer once its record is committed."""
        gw, ex = self.gw, self.ex
        try:
            content = await upstream.read()
        except OSError as exc:
            ex.error = f"worker connection lost: {exc}"
            ex.close("worker_error", 503)
            gw.finish(ex)
            self.answered()
            await send_error(send, EngineUnavailable(f"The replica serving '{ex.model}' failed."))
            return
        headers = answered(gw, ex, upstream.status, upstream.headers, content)
        self.release()  # the worker connection is free before the client has its answer
        await send_json(send, upstream.status, content, headers)

    async def relay(self, upstream: Response, send: Send, include_usage: bool) -> None:
        """Relay an SSE stream event by event; its record is committed before ``[DONE]``."""
        gw, ex = self.gw, self.ex
        headers = [*SSE_HEADERS, (b"x-request-id", ex.request_id.encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        meter = self.stream = StreamMeter(ex, include_usage)
        buffer = b""
        try:
            while chunk := await upstream.chunk():
                if self._answered:
                    continue  # read on to the end, so the worker connection is reused
                buffer += chunk
                cut = buffer.rfind(b"\n\n") + 2
                if cut < 2:
                    continue
                body = meter.events(buffer[:cut])
                buffer = buffer[cut:]
                if body.endswith(DONE_EVENT):
                    ex.close("error" if ex.error else "ok", ex.http_status)
                    gw.finish(ex)
                    await self._end(send, body)
                elif body:
                    await send({"type": "http.response.body", "body": body, "more_body": True})
        except OSError as exc:
            if self._answered:
                return
            meter.count()
            logger.warning("request %s: stream from %s broke: %s", ex.request_id, ex.replica, exc)
            err = EngineUnavailable(f"The replica serving '{ex.model}' failed mid-stream.")
            ex.error = err.message
            ex.close("worker_error", err.status_code)
            gw.finish(ex)
            await self._end(send, _event(err))
            return
        if not self._answered:  # the worker ended the stream without [DONE]
            meter.count()
            ex.close("error" if ex.error else "ok", ex.http_status)
            gw.finish(ex)
            await self._end(send, b"")

    async def _end(self, send: Send, body: bytes) -> None:
        self.answered()
        await send({"type": "http.response.body", "body": body, "more_body": False})

    def expire_after(self, seconds: float) -> asyncio.TimerHandle:
        """End the request after ``seconds`` unless its answer is complete by then."""
        return self._task.get_loop().call_later(seconds, self._expire)

    def _expire(self) -> None:
        if not self._answered:
            self.expired = True
            self._task.cancel()

    async def end_with(self, send: Send, err: ZhisuanError) -> None:
        """End the request before its answer is complete (its deadline, or the gateway
        stopping): its share of the device ends now, it is metered as an error, and the
        client gets ``err`` (an error event on a stream), unless it has its answer."""
        if self._answered:
            return
        self.gw.meter.stop_share(self.ex)
        self.cut_short("error", err.status_code, err.message)
        if self.stream is not None:  # the stream's head is out: end it with the error
            await self._end(send, _event(err))
        else:
            self.answered()
            await send_error(send, err)

    def cut_short(self, status: str, http_status: int, error: str | None = None) -> None:
        """The request ended before its answer was complete (the client went away, the
        gateway stopped, or a fault): metered once, with the worker's final count."""
        ex = self.ex
        if ex.context.get("metered"):
            return  # its record was already taken
        if self.stream is not None:
            self.stream.count()
        if error is not None:
            ex.error = error[:500]
        ex.close(status, http_status)
        settle_abort(self.gw, None if self.replica is None else self.replica.endpoint, ex)


def _workers_of(gw: Gateway, model: str, tried: list[tuple[Replica, int]]) -> set[str]:
    """The keys of the replicas of ``model`` whose worker now is one of those ``tried``: the
    same replica record, not restarted since. A successor that took over a replica's key, or
    a worker restarted after a crash, is another worker, and may take the request."""
    return {
        r.spec.key
        for r in gw.backend.replicas(model)
        if any(r is failed and r.generation == generation for failed, generation in tried)
    }


def _status(exc: Exception) -> int:
    return int(getattr(exc, "status_code", 500))


def _deadline(seconds: float) -> DeadlineExceeded:
    return DeadlineExceeded(
        f"The request ran for {seconds:g} s, the longest a request billed by device "
        "time may run under a budget; it was ended.",
        hint="ask for fewer tokens (max_tokens)",
    )


def _event(err: ZhisuanError) -> bytes:
    """An error as the last event of a stream."""
    return b"data: " + json.dumps(err.to_body()).encode() + b"\n\n"
