"""Queues where tenants take turns, so one tenant's backlog does not hold up another's.

A replica runs a fixed number of requests at once (the transformers engine's batch, the
llama.cpp engine's one context); the rest wait. Waiting first in, first out, a tenant that
sends 64 requests at once delays every other tenant's request by its whole backlog. Here
each tenant has its own line, and the turn goes round the lines: in its turn a tenant of
weight ``w`` has up to ``w`` requests started (fewer if its line empties first), then the
next line's turn comes (weighted round robin). A request waits for at most one turn of
each other tenant with requests waiting, however long their lines are. Within a tenant,
requests keep their order.

The gateway names the tenant in the ``X-Zhisuan-Tenant`` header of the request it sends to
the worker (:data:`TENANT_HEADER`), and a tenant's weight other than 1 with it, folded into
the value: ``team;weight=3`` (:func:`tenant_value`; tenant names have no ``;``). The worker
passes the value on as the request's tenant, and the queue reads it (:func:`split_tenant`):
the line is the name's, the weight the number (clamped to 1..:data:`MAX_WEIGHT`; a value
without one, or with one it cannot read, has weight 1). A request without the header (sent
to the worker directly, or through a gateway with auth off) waits in the line of the tenant
``""``. With one tenant, or with ``fair=False`` (the deployment option ``queue: fifo``), the
order is arrival order, whatever the weights.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Any, Generic, Literal, TypeVar

from zhisuan.errors import InvalidParameter
from zhisuan.limits import MAX_WEIGHT  # the store refuses more; the queue clamps to it

T = TypeVar("T")
QueueOrder = Literal["fair", "fifo"]
QUEUE_ORDERS: tuple[QueueOrder, ...] = ("fair", "fifo")
TENANT_HEADER = "x-zhisuan-tenant"
"""The header that names the tenant of a request the gateway sends to a worker."""
_WEIGHT = ";weight="


def tenant_value(name: str, weight: int = 1) -> str:
    """The value of :data:`TENANT_HEADER` for tenant ``name`` of ``weight``: the name alone
    for weight 1 (the default), else ``name;weight=N``."""
    return name if weight == 1 else f"{name}{_WEIGHT}{weight}"


def split_tenant(value: str) -> tuple[str, int]:
    """The tenant and its weight in a value of :data:`TENANT_HEADER` (see
    :func:`tenant_value`): weight 1 where the value gives none or one that is not a whole
    number; clamped to 1..:data:`MAX_WEIGHT`."""
    name, sep, number = value.partition(_WEIGHT)
    if not sep:
        return value, 1
    if not (number.isascii() and number.isdigit()):
        return name, 1
    weight = int(number) if len(number) < 10 else MAX_WEIGHT  # int() of 4,300 digits raises
    return name, min(max(weight, 1), MAX_WEIGHT)


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


class _Line(deque[T]):
    """One tenant's waiting items, its weight, and how many it has had started this turn."""

    __slots__ = ("taken", "weight")

    def __init__(self) -> None:
        super().__init__()
        self.weight = 1
        self.taken = 0


class TurnQueue(Generic[T]):
    """Items waiting per tenant, taken from the tenants in turn (not thread-safe).

    The turn goes round the tenants that have items waiting, in the order their lines
    opened: a tenant's turn lasts for as many items as its weight (the one its latest item
    came with), or until its line empties. A tenant whose line empties leaves the round
    and rejoins it at the back, with a fresh turn.

    The ``tenant`` each method takes is a value of :data:`TENANT_HEADER`: a name, with its
    weight folded in where it is not 1 (:func:`split_tenant`).

    Args:
        fair: False: one line for every tenant (first in, first out; weights do not count).
    """

    __slots__ = ("_fair", "_lines", "_size")

    def __init__(self, fair: bool = True) -> None:
        self._fair = fair
        self._lines: dict[str, _Line[T]] = {}  # in turn order: the first is next
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, tenant: str, item: T) -> None:
        """Queue ``item`` at the back of ``tenant``'s line."""
        key, weight = split_tenant(tenant) if self._fair else ("", 1)
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = _Line()
        line.weight = weight
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
        """Take the item whose turn is next; once its tenant has had as many as its weight
        this turn, the tenant's next item waits for the next round.

        Raises:
            IndexError: nothing is waiting.
        """
        for key, line in self._lines.items():
            item = line.popleft()
            self._size -= 1
            line.taken += 1
            if not line or line.taken >= line.weight:
                del self._lines[key]
                if line:
                    line.taken = 0
                    self._lines[key] = line  # to the back of the round
            return item
        raise IndexError("pop from an empty TurnQueue")

    def remove(self, tenant: str, item: T) -> bool:
        """Take ``item`` out of ``tenant``'s line (its waiter left); False if it is not there."""
        key = split_tenant(tenant)[0] if self._fair else ""
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
            else:  # out of its line, so that it takes none of its tenant's turn
                self._waiters.remove(tenant, waiter)
            raise

    def release(self) -> None:
        """Hand the lock to the next waiter in turn, or free it."""
        while len(self._waiters):
            waiter = self._waiters.popleft()
            if not waiter.done():  # a cancelled waiter's future is done: skipped
                waiter.set_result(None)
                return
        self._held = False
