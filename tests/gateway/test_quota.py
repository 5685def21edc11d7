"""The quota ledger: worst-case reservation, settlement, and the wait it reports."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from zhisuan.errors import RateLimited
from zhisuan.gateway._quota import IN_FLIGHT_WAIT_S, Limits, QuotaLedger
from zhisuan.protocol.errors import error_headers


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


NOON = datetime(2026, 3, 15, 12, 0, 0).timestamp()


def ledger(clock: Clock, baseline: tuple[int, float] = (0, 0.0)) -> QuotaLedger:
    return QuotaLedger(lambda sid, now: baseline, clock=clock)


def test_budget_reservations_never_overshoot() -> None:
    led = ledger(Clock(NOON))
    scope = [("tenant:a", Limits(budget=10.0))]
    held = []
    for _ in range(64):  # 64 simultaneous requests, each may cost up to 3
        try:
            held.append(led.admit(scope, tokens=30, cost=3.0))
        except RateLimited as exc:
            assert exc.code == "budget_exceeded"
    assert len(held) == 3
    for res in held:
        led.settle(res, tokens=10, cost=1.0)
    assert led.snapshot("tenant:a")["cost_this_month"] == pytest.approx(3.0)
    more = [led.admit(scope, tokens=30, cost=3.0) for _ in range(2)]
    with pytest.raises(RateLimited):
        led.admit(scope, tokens=30, cost=3.0)
    assert len(more) == 2


def test_rpm_window_slides_and_retry_after_is_exact() -> None:
    clock = Clock(NOON)
    led = ledger(clock)
    scope = [("key:k", Limits(rpm=2))]
    led.admit(scope, 1, 0.0)
    clock.t += 10
    led.admit(scope, 1, 0.0)
    with pytest.raises(RateLimited) as info:
        led.admit(scope, 1, 0.0)
    assert info.value.retry_after == pytest.approx(50.0)
    clock.t += 50.01
    led.admit(scope, 1, 0.0)


def test_tpm_counts_reserved_then_actual_tokens() -> None:
    clock = Clock(NOON)
    led = ledger(clock)
    scope = [("tenant:t", Limits(tpm=100))]
    res = led.admit(scope, 80, 0.0)
    with pytest.raises(RateLimited) as info:
        led.admit(scope, 30, 0.0)
    assert info.value.code == "tokens_per_minute_exceeded"
    assert "more than the limit itself" not in info.value.message  # it fits after a wait
    led.settle(res, 20, 0.0)  # used far less than reserved
    led.admit(scope, 30, 0.0)
    with pytest.raises(RateLimited, match="more than the limit itself: lower max_tokens"):
        led.admit(scope, 101, 0.0)  # no wait makes room for it


def test_tokens_per_day_uses_the_stored_baseline_and_resets_at_midnight() -> None:
    clock = Clock(datetime(2026, 3, 15, 23, 59, 0).timestamp())
    led = ledger(clock, baseline=(950, 0.0))
    scope = [("tenant:d", Limits(tokens_per_day=1000))]
    with pytest.raises(RateLimited) as info:
        led.admit(scope, 100, 0.0)
    assert info.value.code == "tokens_per_day_exceeded"
    assert 1 <= info.value.retry_after <= 61
    assert "(used 950, in flight 0; this request may use up to 100)" in info.value.message
    clock.t += 120  # next day
    led.admit(scope, 100, 0.0)
    with pytest.raises(RateLimited, match="up to 1001, more than the limit itself"):
        led.admit(scope, 1001, 0.0)


def test_a_budget_refusal_says_what_the_request_may_cost() -> None:
    led = ledger(Clock(NOON), baseline=(0, 0.25))
    scope = [("tenant:b", Limits(budget=1.0))]
    held = led.admit(scope, 10, 0.5)
    with pytest.raises(RateLimited) as info:
        led.admit(scope, 10, 0.5)
    message = info.value.message
    assert "(spent 0.25, in flight 0.5; this request may cost up to 0.5)." in message
    assert "more than the budget itself" not in message  # it fits once the first has settled
    led.settle(held, 10, 0.1)
    led.admit(scope, 10, 0.5)
    with pytest.raises(RateLimited, match=r"up to 1\.3, more than the budget itself: lower max"):
        led.admit(scope, 10, 1.3)  # not even in a month of its own


@pytest.mark.parametrize(
    ("limits", "tokens", "cost", "code", "wait"),
    [
        (Limits(tokens_per_day=1000), 600, 0.0, "tokens_per_day_exceeded", 12 * 3600),
        (Limits(budget=1.0), 10, 0.6, "budget_exceeded", 16 * 86_400 + 12 * 3600),
    ],
)
def test_what_only_requests_in_flight_hold_is_worth_a_seconds_wait(
    limits: Limits, tokens: int, cost: float, code: str, wait: float
) -> None:
    """Refused for what requests in flight reserved, a request may fit once they end;
    refused for what was used, not before the next day (tokens) or month (budget)."""
    clock = Clock(datetime(2026, 3, 15, 12, 0, 0, tzinfo=UTC).timestamp())
    led = ledger(clock)
    scope = [("tenant:r", limits)]
    first = led.admit(scope, tokens, cost)
    with pytest.raises(RateLimited) as info:
        led.admit(scope, tokens, cost)
    assert info.value.code == code and info.value.retry_after == IN_FLIGHT_WAIT_S
    clock.t += 1
    led.settle(first, tokens, cost)  # it used all it had reserved
    with pytest.raises(RateLimited) as info:
        led.admit(scope, tokens, cost)
    assert info.value.code == code and info.value.retry_after == pytest.approx(wait - 1)


def test_concurrency_cap_and_key_and_tenant_scopes() -> None:
    led = ledger(Clock(NOON))
    scopes = [("tenant:x", Limits(max_concurrent=2)), ("key:p", Limits())]
    a = led.admit(scopes, 1, 0.0)
    led.admit(scopes, 1, 0.0)
    with pytest.raises(RateLimited) as info:
        led.admit(scopes, 1, 0.0)
    assert info.value.code == "concurrency_limit_exceeded"
    assert led.snapshot("key:p")["concurrent"] == 2  # a refusal reserves nothing
    led.settle(a, 1, 0.0)
    led.settle(a, 1, 0.0)  # idempotent
    led.admit(scopes, 1, 0.0)


def test_the_minute_window_total_is_kept_exactly() -> None:
    import random

    rng = random.Random(7)
    clock = Clock(NOON)
    led = ledger(clock)
    scope = [("tenant:a", Limits(tpm=10**9))]
    open_ = []
    for _ in range(2000):
        clock.t += rng.uniform(0, 0.2)
        if open_ and rng.random() < 0.5:
            led.settle(open_.pop(rng.randrange(len(open_))), tokens=rng.randint(0, 50), cost=0.0)
        else:
            open_.append(led.admit(scope, tokens=rng.randint(1, 100), cost=0.0))
        state = led._scopes["tenant:a"]
        state.expire(clock.t)
        assert state.window_tokens() == sum(e.tokens for e in state.tokens)


def test_retry_after_is_never_earlier_than_the_wait() -> None:
    def header(wait: float) -> str:
        return error_headers(RateLimited("Too many requests.", retry_after=wait))["Retry-After"]

    assert [header(w) for w in (0.01, 1.2, 50.0, 59.5)] == ["1", "2", "50", "60"]


def test_use_reports_each_limit_with_what_is_in_flight() -> None:
    clock = Clock(NOON)
    led = ledger(clock, baseline=(500, 2.0))  # used earlier today and this month
    tenant = ("tenant:a", Limits(tpm=1000, tokens_per_day=10_000, budget=10.0))
    key = ("key:zs-k", Limits(rpm=5, max_concurrent=2))
    assert led.use() == []  # no scope seen yet
    done = led.admit([tenant, key], tokens=100, cost=0.5)
    led.settle(done, tokens=40, cost=0.25)
    led.admit([tenant, key], tokens=100, cost=0.5)  # still in flight
    assert sorted(led.use()) == [
        ("key:zs-k", "max_concurrent", 1.0, 2.0),
        ("key:zs-k", "rpm", 2.0, 5.0),
        ("tenant:a", "budget", 2.0 + 0.25 + 0.5, 10.0),
        ("tenant:a", "tokens_per_day", 500 + 40 + 100, 10_000.0),
        ("tenant:a", "tpm", 140.0, 1000.0),
    ]
    clock.t += 86_400  # the next day: the window and the day start empty
    use = {(sid, limit): used for sid, limit, used, _ in led.use()}
    assert use[("tenant:a", "tpm")] == 0 and use[("key:zs-k", "rpm")] == 0
    assert use[("tenant:a", "tokens_per_day")] == 100  # what the request in flight holds


def test_scopes_no_longer_live_leave_the_metrics_once_idle_and_are_dropped_later() -> None:
    led = ledger(Clock(NOON))
    gone = [("tenant:gone", Limits(rpm=10)), ("key:zs-gone", Limits(tpm=100))]
    held = led.admit(gone, tokens=5, cost=0.0)
    led.settle(led.admit([("tenant:stays", Limits(rpm=10))], tokens=5, cost=0.0), 5, 0.0)
    assert led.retain({"tenant:stays"}) == {}  # deleted and revoked, a request in flight
    assert {sid for sid, *_ in led.use()} == {"tenant:gone", "key:zs-gone", "tenant:stays"}
    led.settle(held, tokens=5, cost=0.0)  # the last one: no retain() need come after it
    assert {sid for sid, *_ in led.use()} == {"tenant:stays"}
    assert led.snapshot("tenant:gone")["tokens_today"] == 5  # kept until its record is stored
    idle = led.retain({"tenant:stays"})
    assert idle == {"tenant:gone": 1, "key:zs-gone": 1}
    led.drop(idle)  # the gateway calls this once the usage records are in the store
    assert led.snapshot("tenant:gone") == {} and led.snapshot("key:zs-gone") == {}
    assert led.snapshot("tenant:stays")["tokens_today"] == 5


def test_a_scope_used_again_before_it_is_dropped_is_kept() -> None:
    led = ledger(Clock(NOON))
    back = [("tenant:back", Limits(rpm=10))]
    led.settle(led.admit(back, tokens=5, cost=0.0), tokens=5, cost=0.0)
    idle = led.retain(set())  # deleted …
    led.retain({"tenant:back"})  # … and created again while its records were being stored
    led.drop(idle)
    assert led.snapshot("tenant:back")["tokens_today"] == 5
    idle = led.retain(set())  # deleted again …
    led.settle(led.admit(back, tokens=7, cost=0.0), tokens=7, cost=0.0)  # … a request still came
    led.drop(idle)
    assert led.snapshot("tenant:back")["tokens_today"] == 12
