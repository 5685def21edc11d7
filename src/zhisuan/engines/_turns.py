"""Queues where tenants take turns, so one tenant's backlog does not hold up another's.

A replica runs a fixed number of requests at once (the transformers engine's batch, the
llama.cpp engine's one context); the rest wait. Waiting first in, first out, a tenant that
sends 64 requests at once delays every other tenant's request by its whole backlog. Here
each tenant has its own line, and the next request to start is the head of the next line
in turn: a request waits for at most one turn of each other tenant with requests waiting,
however long their lines are. Within a tenant, requests keep their order.

The gateway names the tenant in the ``X-Zhisuan-Tenant`` header of the request it sends to
the worker (:data:`TENANT_HEADER`); a request without one (sent to the worker directly, or
through a gateway with auth off) waits in the line of the tenant ``""``. With one tenant,
or with ``fair=False`` (the deployment option ``queue: fifo``), the order is arrival order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Any, Generic, Literal, TypeVar

from zhisuan.errors import InvalidParameter

T = TypeVar("T")
QueueOrder = Literal["fair", "fifo"]
QUEUE_ORDERS: tuple[QueueOrder, ...] = ("fair", "fifo")
TENANT_HEADER = "x-zhisuan-tenant"
"""The header that names the tenant of a request the gateway sends to a worker."""


def fair_option(options: Mapping[str, Any]) -> bool:
    """Whether a deployment's option ``queue`` has tenants take turns (``"fair"``, the
    default) rather than keep arrival order (``"fifo"``).

    Raises:
        InvalidParameter: the option is neither.
    """
    order = options.get("queue") or "fair"
    if order not in QUEUE_ORDERS:
        raise InvalidParameter(
            f"unknown queue order {order!r}; use one of {', '.join(QUEUE_ORDERS)}",
            param="queue",
        )
    return bool(order == "fair")


class TurnQueue(Generic[T]):
    """Items waiting per tenant, taken from the tenants in turn (not thread-safe).

    The turn goes round the tenants that have items waiting, in the order their lines
    opened; a tenant whose line empties leaves the round and rejoins it at the back.

    Args:
        fair: False: one line for every tenant (first in, first out).
    """

    __slots__ = ("_fair", "_lines", "_size")

    def __init__(self, fair: bool = True) -> None:
        self._fair = fair
        self._lines: dict[str, deque[T]] = {}  # in turn order: the first is next
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, tenant: str, item: T) -> None:
        """Queue ``item`` at the back of ``tenant``'s line."""
        key = tenant if self._fair else ""
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = deque()
        line.append(item)
        self._size += 1

    def peek(self) -> T:
        """The item whose turn is next.

        Raises:
            IndexError: nothing is waiting.
        """
        for line in self._lines.values():
            return line[0]
        raise IndexError("peek from an empty TurnQueue")

    def popleft(self) -> T:
        """Take the item whose turn is next; its tenant's next item waits for the next round.

        Raises:
            IndexError: nothing is waiting.
        """
        for key, line in self._lines.items():
            item = line.popleft()
            del self._lines[key]
            if line:
                self._lines[key] = line  # to the back of the round
            self._size -= 1
            return item
        raise IndexError("pop from an empty TurnQueue")

    def remove(self, tenant: str, item: T) -> bool:
        """Take ``item`` out of ``tenant``'s line (its waiter left); False if it is not there."""
        key = tenant if self._fair else ""
        line = self._lines.get(key)
        if line is None or item not in line:
            return False
        line.remove(item)
        self._size -= 1
        if not line:
            del self._lines[key]
        return True

    def drain(self) -> list[T]:
        """Take every item (in turn order) and leave the queue empty."""
        items: list[T] = []
        while self._size:
            items.append(self.popleft())
        return items


class TurnLock:
    """An asyncio lock handed over to its waiters in turns between tenants.

    Args:
        fair: False: handed over first in, first out.
    """

    def __init__(self, fair: bool = True) -> None:
        self._held = False
        self._waiters: TurnQueue[asyncio.Future[None]] = TurnQueue(fair)

    def locked(self) -> bool:
        return self._held

    @contextlib.asynccontextmanager
    async def hold(self, tenant: str) -> AsyncIterator[None]:
        """Hold the lock for the body of an ``async with``, waiting in ``tenant``'s line."""
        await self.acquire(tenant)
        try:
            yield
        finally:
            self.release()

    async def acquire(self, tenant: str) -> None:
        """Wait for the lock in ``tenant``'s line; a waiter cancelled meanwhile leaves its
        line (and passes the lock on if it had just been handed it)."""
        if not self._held:  # while it is held, every waiter is in a line
            self._held = True
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(tenant, waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed the lock, then cancelled before it ran
            raise

    def release(self) -> None:
        """Hand the lock to the next waiter in turn, or free it."""
        while len(self._waiters):
            waiter = self._waiters.popleft()
            if not waiter.done():  # a cancelled waiter's future is done: skipped
                waiter.set_result(None)
                return
        self._held = False
