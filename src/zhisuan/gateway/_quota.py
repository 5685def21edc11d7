"""Quotas that hold under concurrency: reserve the worst case, settle the actual use.

A request is admitted only if its worst case (prompt upper bound + completion budget, and
the cost of those tokens) fits every limit of its tenant and of its key, counting what
requests already in flight have reserved. At the end the reservation is replaced by the
actual use. All of this runs on the gateway's event loop with no ``await`` between check
and reserve, so 64 simultaneous requests cannot overshoot a budget.

Limits (``None`` = unlimited): requests per minute, tokens per minute, tokens per UTC
day, money per calendar month (UTC), concurrent requests. Over a limit →
:class:`zhisuan.errors.RateLimited` with the seconds until it could pass.

Day and month totals start from the usage records (``baseline``) so a restart forgets
nothing; the per-minute windows start empty.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from zhisuan.errors import RateLimited
from zhisuan.store import QuotaLimits as Limits

WINDOW_S = 60.0
IN_FLIGHT_WAIT_S = 1.0
"""Retry-After of a refusal that requests in flight make, not settled use (too many at
once, or a day's tokens or a month's budget held by their reservations): they may end soon."""

__all__ = ["Limits", "QuotaLedger", "Reservation"]


@dataclass(slots=True)
class _Event:
    at: float
    tokens: int
    in_window: bool = True


@dataclass(slots=True)
class _Scope:
    limits: Limits
    requests: deque[float] = field(default_factory=deque)
    tokens: deque[_Event] = field(default_factory=deque)
    day: str = ""
    day_tokens: int = 0
    month: str = ""
    month_cost: float = 0.0
    reserved_tokens: int = 0
    reserved_cost: float = 0.0
    concurrent: int = 0
    window_total: int = 0  # sum of ``tokens`` (kept, not summed per request)
    leaving: bool = False  # no longer live: out of use() once idle, then dropped
    admitted: int = 0  # requests admitted so far (tells a scope used meanwhile)

    def expire(self, now: float) -> None:
        while self.requests and self.requests[0] <= now - WINDOW_S:
            self.requests.popleft()
        while self.tokens and self.tokens[0].at <= now - WINDOW_S:
            gone = self.tokens.popleft()
            gone.in_window = False
            self.window_total -= gone.tokens

    def window_tokens(self) -> int:
        return self.window_total


@dataclass(slots=True)
class Reservation:
    """What one admitted request holds until it is settled."""

    scopes: list[tuple[str, _Scope, _Event]]
    tokens: int
    cost: float
    settled: bool = False


Baseline = Callable[[str, datetime], tuple[int, float]]
"""``baseline(scope, now)`` → (tokens used today, money spent this month) from the records."""


class QuotaLedger:
    """In-memory quota state of one gateway process.

    Args:
        baseline: reads a scope's day tokens and month cost from the usage records.
        clock: wall-clock seconds (for tests).
    """

    def __init__(self, baseline: Baseline, clock: Callable[[], float] = time.time) -> None:
        self._baseline = baseline
        self._clock = clock
        self._scopes: dict[str, _Scope] = {}
        self._day_starts = self._day_ends = 0.0
        self._day = ("", "")

    def admit(self, scopes: Sequence[tuple[str, Limits]], tokens: int, cost: float) -> Reservation:
        """Reserve ``tokens`` and ``cost`` in every scope, or refuse.

        Args:
            scopes: ``(scope id, limits)`` pairs, e.g. the tenant's and the key's.
            tokens: the request's worst-case tokens (prompt upper bound + completion budget).
            cost: the worst-case cost of those tokens.

        Returns:
            The reservation to pass to :meth:`settle`.

        Raises:
            RateLimited: a limit would be exceeded; ``retry_after`` says when to retry.
        """
        now = self._clock()
        day = self._today(now)
        known = self._scopes
        states = []
        for sid, limits in scopes:
            scope = known.get(sid)
            if scope is None:
                scope = self._open(sid, limits, now, day)
            elif scope.day != day[0]:
                _roll(scope, day)
            scope.limits = limits
            scope.expire(now)
            _check(sid, scope, tokens, cost, now)
            states.append((sid, scope))
        held = []
        for sid, scope in states:
            event = _Event(now, tokens)
            scope.requests.append(now)
            scope.tokens.append(event)
            scope.window_total += tokens
            scope.reserved_tokens += tokens
            scope.reserved_cost += cost
            scope.concurrent += 1
            scope.admitted += 1
            held.append((sid, scope, event))
        return Reservation(held, tokens, cost)

    def settle(self, res: Reservation, tokens: int, cost: float) -> None:
        """Replace the reservation by the actual use (idempotent)."""
        if res.settled:
            return
        res.settled = True
        day = self._today(self._clock())
        for _, scope, event in res.scopes:
            if event.in_window:
                scope.window_total += tokens - event.tokens
            event.tokens = tokens
            scope.reserved_tokens -= res.tokens
            scope.reserved_cost -= res.cost
            scope.concurrent -= 1
            if scope.day != day[0]:
                _roll(scope, day)
            scope.day_tokens += tokens
            scope.month_cost += cost

    def snapshot(self, sid: str) -> dict[str, float]:
        """Current use of a scope (for the admin API and tests)."""
        scope = self._scopes.get(sid)
        if scope is None:
            return {}
        scope.expire(self._clock())
        return {
            "requests_last_minute": len(scope.requests),
            "tokens_last_minute": scope.window_tokens(),
            "tokens_today": scope.day_tokens,
            "cost_this_month": scope.month_cost,
            "reserved_cost": scope.reserved_cost,
            "concurrent": scope.concurrent,
        }

    def use(self) -> list[tuple[str, str, float, float]]:
        """``(scope, limit, used, allowed)`` for every limit of every scope this gateway has
        admitted a request for since it started; ``used`` counts what requests in flight
        hold, as admission does (the rpm, tpm, tokens_per_day, budget and max_concurrent
        limits, by those names)."""
        now = self._clock()
        day = self._today(now)
        out: list[tuple[str, str, float, float]] = []
        for sid, s in list(self._scopes.items()):
            if s.leaving and s.concurrent == 0:
                continue  # a deleted tenant's, a revoked key's: gone from the metrics
            s.expire(now)
            if s.day != day[0]:
                _roll(s, day)  # idle since yesterday: today's use is none yet
            lim = s.limits
            for name, used, allowed in (
                ("rpm", len(s.requests), lim.rpm),
                ("tpm", s.window_total, lim.tpm),
                ("tokens_per_day", s.day_tokens + s.reserved_tokens, lim.tokens_per_day),
                ("budget", s.month_cost + s.reserved_cost, lim.budget),
                ("max_concurrent", s.concurrent, lim.max_concurrent),
            ):
                if allowed is not None:
                    out.append((sid, name, float(used), float(allowed)))
        return out

    def retain(self, live: set[str]) -> dict[str, int]:
        """Mark the scopes not in ``live`` (a deleted tenant's, a revoked key's) as leaving:
        ``/metrics`` no longer reports them once no request of theirs is in flight.

        Returns:
            The leaving scopes idle now, each with its count of admitted requests, for
            :meth:`drop` once their usage records are stored.
        """
        idle: dict[str, int] = {}
        for sid, scope in self._scopes.items():
            scope.leaving = sid not in live
            if scope.leaving and scope.concurrent == 0:
                idle[sid] = scope.admitted
        return idle

    def drop(self, idle: dict[str, int]) -> None:
        """Forget the scopes :meth:`retain` returned that are still leaving and were not
        used since. Call it once their usage records are in the store: a scope used again
        (a tenant created again under its name) starts from the records, as every scope
        does, and a record still on its way there would be missed."""
        for sid, admitted in idle.items():
            scope = self._scopes.get(sid)
            if scope is not None and scope.leaving and scope.admitted == admitted:
                del self._scopes[sid]  # idle since: concurrent is still 0

    def _today(self, now: float) -> tuple[str, str]:
        """(day, month) of ``now`` in UTC, recomputed only when the day changes."""
        if not self._day_starts <= now < self._day_ends:
            wall = datetime.fromtimestamp(now, UTC)
            start = wall.replace(hour=0, minute=0, second=0, microsecond=0)
            self._day_starts = start.timestamp()
            self._day_ends = (start + timedelta(days=1)).timestamp()
            self._day = (_day(wall), _month(wall))
        return self._day

    def _open(self, sid: str, limits: Limits, now: float, day: tuple[str, str]) -> _Scope:
        """A scope seen for the first time: today's tokens and this month's cost from the
        usage records."""
        scope = _Scope(limits)
        wall = datetime.fromtimestamp(now, UTC)
        scope.day_tokens, scope.month_cost = self._baseline(sid, wall)
        scope.day, scope.month = day
        self._scopes[sid] = scope
        return scope


def _roll(scope: _Scope, day: tuple[str, str]) -> None:
    """A new UTC day (and maybe month) for ``scope``."""
    scope.day, scope.day_tokens = day[0], 0
    if scope.month != day[1]:  # a new month is a new day
        scope.month, scope.month_cost = day[1], 0.0


def _never(over: bool, limit: str = "limit") -> str:
    """What a refusal adds when the request's worst case alone is ``over`` the ``limit``:
    no wait makes room for it."""
    return f", more than the {limit} itself: lower max_tokens or the prompt" if over else ""


def _check(sid: str, s: _Scope, tokens: int, cost: float, now: float) -> None:
    lim = s.limits
    if lim.max_concurrent is not None and s.concurrent + 1 > lim.max_concurrent:
        raise RateLimited(
            f"Too many concurrent requests for this {_who(sid)} (limit {lim.max_concurrent}).",
            retry_after=IN_FLIGHT_WAIT_S,
            code="concurrency_limit_exceeded",
        )
    if lim.rpm is not None and len(s.requests) + 1 > lim.rpm:
        raise RateLimited(
            f"Rate limit reached for this {_who(sid)}: {lim.rpm} requests per minute.",
            retry_after=s.requests[0] + WINDOW_S - now,
            code="requests_per_minute_exceeded",
        )
    if lim.tpm is not None and s.window_tokens() + tokens > lim.tpm:
        never = _never(tokens > lim.tpm)
        raise RateLimited(
            f"Rate limit reached for this {_who(sid)}: {lim.tpm} tokens per minute "
            f"(this request may use up to {tokens}{never}).",
            retry_after=_tpm_wait(s, tokens, lim.tpm, now),
            code="tokens_per_minute_exceeded",
        )
    if lim.tokens_per_day is not None and (
        s.day_tokens + s.reserved_tokens + tokens > lim.tokens_per_day
    ):
        wait = IN_FLIGHT_WAIT_S  # it fits once those in flight settle below their worst case
        if s.day_tokens + tokens > lim.tokens_per_day:  # it does not: tomorrow
            wall = datetime.fromtimestamp(now, UTC)
            tomorrow = (wall + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
            wait = (tomorrow - wall).total_seconds()
        never = _never(tokens > lim.tokens_per_day)
        raise RateLimited(
            f"Daily token limit reached for this {_who(sid)}: {lim.tokens_per_day} tokens per day "
            f"(used {s.day_tokens}, in flight {s.reserved_tokens}; this request may use up "
            f"to {tokens}{never}).",
            retry_after=wait,
            code="tokens_per_day_exceeded",
        )
    if lim.budget is not None and s.month_cost + s.reserved_cost + cost > lim.budget + 1e-12:
        wait = IN_FLIGHT_WAIT_S  # as above
        if s.month_cost + cost > lim.budget + 1e-12:  # next month
            wall = datetime.fromtimestamp(now, UTC)
            wait = (_next_month(wall) - wall).total_seconds()
        never = _never(cost > lim.budget + 1e-12, "budget")
        raise RateLimited(
            f"Monthly budget reached for this {_who(sid)}: {lim.budget:g} "
            f"(spent {s.month_cost:.6g}, in flight {s.reserved_cost:.6g}; this request may "
            f"cost up to {cost:.6g}{never}).",
            retry_after=wait,
            code="budget_exceeded",
        )


def _who(sid: str) -> str:
    """The kind of scope ``sid`` names (``tenant``, ``key``), for a refusal's message."""
    return sid.split(":", 1)[0]


def _tpm_wait(s: _Scope, tokens: int, tpm: int, now: float) -> float:
    """Seconds until enough of the window's tokens expire for ``tokens`` to fit."""
    need = s.window_tokens() + tokens - tpm
    freed = 0
    for event in s.tokens:
        freed += event.tokens
        if freed >= need:
            return event.at + WINDOW_S - now
    return WINDOW_S


def _day(wall: datetime) -> str:
    return f"{wall.year:04d}-{wall.month:02d}-{wall.day:02d}"


def _month(wall: datetime) -> str:
    return f"{wall.year:04d}-{wall.month:02d}"


def _next_month(wall: datetime) -> datetime:
    first = wall.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (first + timedelta(days=32)).replace(day=1)
