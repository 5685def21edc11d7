"""The express lane: a whole (non-stream) answer proxied in callbacks, with no task.

At concurrency the engine ends a batch's requests together, and the gateway gets their
answers in a burst while the clients' next requests arrive. On the task path every one
of them waits in the event loop's queue twice: behind the parsing of every socket read
in the same turn of the loop before its task starts, and behind the other tasks before
its task resumes with the answer. Here a request is sent to the worker from the parser's
callback that completes it, and the answer is metered and written from the callback that
completes the worker's answer, so each waits only for the requests read before it.

It takes a request only when it has everything at hand: a complete body, a non-stream
request, a ready replica and an idle pooled connection to it. Anything else, and a
pooled connection the worker had closed, goes on the task path (``_proxy.forward``)
with the exchange as it is. The metering is the task path's (:func:`_ends.answered`,
:func:`_ends.settle_abort`): a client that leaves closes the worker connection, which
cancels the generation, and the record takes the worker's final count. A stopping gateway
whose grace period is over ends the requests still on the lane the same way
(:func:`end_in_flight`), each answered 503 ``gateway_stopping``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from zhisuan.cluster import Replica
from zhisuan.errors import EngineUnavailable, ZhisuanError
from zhisuan.gateway._context import Gateway
from zhisuan.gateway._ends import address, answered, settle_abort, worker_request
from zhisuan.gateway._exchange import Exchange
from zhisuan.gateway._reply import error_answer, json_headers
from zhisuan.gateway._routing import pick_replica
from zhisuan.gateway._wire import _Conn

logger = logging.getLogger(__name__)

Answer = Callable[[int, list[tuple[bytes, bytes]], bytes], None]
"""Writes a whole answer to the client: status, headers, body."""
Retry = Callable[[], None]
"""Sends the request on the task path instead."""
_LIVE: set[Express] = set()
"""Requests on the lane, sent and not answered (every gateway of the process)."""


class Express:
    """One request on the express lane.

    Args:
        gw: the gateway state.
        ex: the admitted request's exchange.
        path: the worker path.
        body: the request body, forwarded unchanged.
        answer: writes the answer to the client.
        retry: puts the request on the task path (a stale pooled connection).
    """

    __slots__ = ("_answer", "_body", "_conn", "_path", "_replica", "_retry", "ex", "gw")

    def __init__(
        self, gw: Gateway, ex: Exchange, path: str, body: bytes, answer: Answer, retry: Retry
    ) -> None:
        self.gw = gw
        self.ex = ex
        self._path = path
        self._body = body
        self._answer = answer
        self._retry = retry
        self._replica: Replica | None = None
        self._conn: _Conn | None = None

    def start(self) -> bool:
        """Send the request to a replica over an idle pooled connection.

        Returns:
            False, with nothing done, if no replica is ready or none has an idle
            connection: the task path takes the request (and answers its errors).
        """
        gw, ex = self.gw, self.ex
        taken = _take(gw, ex, self._path, self._body)
        if taken is None:
            return False
        replica, conn, request = taken
        self._replica, self._conn = replica, conn
        _LIVE.add(self)
        gw.wire.send(conn, request, self._done)
        asyncio.get_running_loop().call_soon(self._sent, replica)
        return True

    def to_task(self) -> None:
        """Put the request on the task path (the lane did not take it)."""
        self._retry()

    def withdraw(self) -> None:
        """Take back a request sent ahead of its checks, which refused it: its worker
        connection is closed, which cancels it there. Nothing is metered here (the
        refusal is)."""
        conn, replica = self._conn, self._replica
        self._conn = self._replica = None
        _LIVE.discard(self)
        if conn is not None and replica is not None:
            conn.callback = None
            take_back(self.gw, (replica, conn))

    def client_gone(self) -> None:
        """The client went away before its answer: cancel the generation, meter it."""
        self._cut("client_abort", 499)

    def stop(self, err: ZhisuanError) -> None:
        """End the request now (the gateway is stopping): the generation is cancelled, the
        request metered as an error, and the client answered ``err``."""
        if self._cut("error", err.status_code, err.message):
            self._answer(*error_answer(err))

    def _cut(self, status: str, http_status: int, error: str | None = None) -> bool:
        """Close the worker connection mid-answer, which cancels the generation there, and
        meter the request with the worker's final count; False if it had ended already."""
        conn, replica = self._conn, self._replica
        if conn is None:
            return False
        self._conn = self._replica = None
        _LIVE.discard(self)
        self.gw.wire.release(conn)  # mid-answer: closed, so the worker cancels
        if replica is not None:
            replica.outstanding -= 1
        ex = self.ex
        if not ex.context.get("metered"):
            if error is not None:
                ex.error = error
            ex.close(status, http_status)
            settle_abort(self.gw, None if replica is None else replica.endpoint, ex)
        return True

    def _sent(self, replica: Replica) -> None:
        if self._replica is replica and not self.ex.context.get("metered"):
            self.ex.replica = replica.spec.key  # here: a refused request had no replica
            self.gw.meter.start(self.ex, replica)
            self.gw.meter.prepare(self.ex)

    def _done(self) -> None:
        """The worker's answer is complete, or its connection was lost."""
        conn, replica = self._conn, self._replica
        if conn is None:
            return
        conn.callback = None
        self._conn = self._replica = None
        _LIVE.discard(self)
        gw, ex = self.gw, self.ex
        try:
            if conn.complete:
                content = conn.take()
                status = conn.parser.get_status_code()
                # durable before the client has its answer; the quota and the rest after
                headers = answered(gw, ex, status, conn.headers, content, account=False)
                self._release(conn, replica)  # free before the client has its answer
                self._answer(status, json_headers(content, headers), content)
                gw.meter.account(ex)
                return
            self._release(conn, replica)
            if not conn.received:  # a pooled connection the worker had just closed
                gw.meter.abandon(ex)
                self._retry()
                return
            err = EngineUnavailable(f"The replica serving '{ex.model}' failed.")
            ex.error = "worker connection lost mid-answer"
            ex.close("worker_error", err.status_code)
            gw.finish(ex)
            self._answer(*error_answer(err))
        except Exception:  # in a parser's callback: never let it reach the parser
            logger.exception("request %s: the express lane failed", ex.request_id)
            if not ex.context.get("metered"):
                ex.close("error", 500)
                gw.finish(ex)
            gw.meter.account(ex)  # journaled before the failure: settled all the same
            self._answer(*error_answer(ZhisuanError("internal server error")))

    def _release(self, conn: _Conn, replica: Replica | None) -> None:
        self.gw.wire.release(conn)
        if replica is not None:
            replica.outstanding -= 1


def end_in_flight(gw: Gateway, err: ZhisuanError) -> None:
    """End ``gw``'s requests still on the lane, each answered ``err`` (see :meth:`Express.stop`)."""
    for lane in [lane for lane in _LIVE if lane.gw is gw]:
        lane.stop(err)


Sent = tuple[Replica, _Conn]
"""A stream's request written to a replica from a callback, its answer not read yet."""


def send_stream(gw: Gateway, ex: Exchange, path: str, body: bytes) -> Sent | None:
    """Write a stream's request to a ready replica over an idle pooled connection, from
    the parser's callback (see ``HotPath._ahead``); its task reads the answer
    (``_proxy.forward``'s ``sent``).

    Returns:
        None, with nothing done, if no replica is ready or none has an idle connection.
    """
    taken = _take(gw, ex, path, body)
    if taken is None:
        return None
    replica, conn, request = taken
    gw.wire.write(conn, request, whole=False)
    return replica, conn


def _take(gw: Gateway, ex: Exchange, path: str, body: bytes) -> tuple[Replica, _Conn, bytes] | None:
    """A ready replica with an idle pooled connection, counted as busy with the request,
    and the request to write on it; None, with nothing done, if there is none."""
    try:
        replica = pick_replica(gw.backend, ex.model)
        host, port = address(replica.endpoint)
    except (ZhisuanError, OSError):
        return None
    conn = gw.wire.idle(host, port)
    if conn is None:
        return None
    replica.outstanding += 1
    return replica, conn, worker_request(host, port, path, body, ex)


def take_back(gw: Gateway, sent: Sent) -> None:
    """Withdraw a request sent ahead of its checks, which refused it: its connection is
    closed, which cancels it on the worker."""
    replica, conn = sent
    gw.wire.release(conn)  # not answered: closed
    replica.outstanding -= 1
