"""The gateway tells the worker a tenant's weight in the tenant header's value
(``team;weight=3``), and a tenant of weight 1's request to a worker is byte for byte what it
was before weights: the principal's line, the key's tenant's weight from the store, both
ways a request leaves (the express lane's bytes, the task path's headers), and the hot path
that sends a request ahead of its checks."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_ahead import _body, _running, _serve  # the hot path over a worker socket

from zhisuan.gateway._admission import Admission
from zhisuan.gateway._auth import OFF, Authenticator, Principal
from zhisuan.gateway._ends import worker_headers, worker_request
from zhisuan.gateway._exchange import Exchange
from zhisuan.store import Store

CHAT = "/v1/chat/completions"
BODY = b'{"model": "m"}'


def _admitted(principal: Principal) -> Exchange:
    """A request that admission has seen (no limits to reserve in)."""
    ex = Exchange(request_id="req-1", endpoint="chat.completions", model="m")
    gw = SimpleNamespace(meter=SimpleNamespace(begin=lambda ex: None))
    Admission(gw, None).check(principal, ex)  # type: ignore[arg-type]
    return ex


def test_the_principal_names_its_line_with_the_weight_other_than_1() -> None:
    assert Principal("team", "zs-team", False).line == "team"
    assert Principal("team", "zs-team", False, weight=1).line == "team"
    assert Principal("team", "zs-team", False, weight=3).line == "team;weight=3"
    assert OFF.line == "anonymous"


def test_a_weight_1_tenants_request_to_a_worker_is_as_it_was() -> None:
    ex = _admitted(Principal("team", "zs-team", False))
    assert (ex.context["tenant"], ex.context["line"]) == ("team", "team")
    assert worker_request("127.0.0.1", 8001, CHAT, BODY, ex) == (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:8001\r\n"
        b"content-type: application/json\r\nX-Zhisuan-Usage: always\r\n"
        b"X-Request-Id: req-1\r\nx-zhisuan-tenant: team\r\ncontent-length: 14\r\n\r\n"
        b'{"model": "m"}'
    )
    assert worker_headers(ex)["x-zhisuan-tenant"] == "team"


def test_a_weighted_tenants_request_carries_its_weight_both_ways() -> None:
    ex = _admitted(Principal("team", "zs-team", False, weight=3))
    assert ex.context["tenant"] == "team"  # its records name the tenant alone
    fast = worker_request("127.0.0.1", 8001, CHAT, BODY, ex)
    assert b"\r\nx-zhisuan-tenant: team;weight=3\r\ncontent-length: 14\r\n" in fast
    assert worker_headers(ex)["x-zhisuan-tenant"] == "team;weight=3"


def test_a_request_no_admission_saw_waits_as_anonymous_of_weight_1() -> None:
    ex = Exchange(request_id="req-1", endpoint="chat.completions", model="m")  # auth off
    assert b"\r\nx-zhisuan-tenant: anonymous\r\n" in worker_request("h", 1, CHAT, BODY, ex)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(f"sqlite:///{tmp_path / 'weights.db'}") as s:
        yield s


def test_a_keys_principal_has_its_tenants_weight_and_a_change_after_a_reload(
    store: Store,
) -> None:
    store.create_tenant("research", weight=3)
    store.create_tenant("plain")
    _, research = store.create_key(tenant="research")
    _, plain = store.create_key(tenant="plain")
    auth = Authenticator(store, admin_key=None)
    assert (auth.resolve(research).weight, auth.resolve(research).line) == (3, "research;weight=3")
    assert auth.resolve(plain).line == "plain"
    store.update_tenant("research", weight=1)
    store.update_tenant("plain", weight=2)
    auth.clear()  # what a change through the admin API, or a reconcile, does
    assert auth.resolve(research).line == "research"
    assert auth.resolve(plain).line == "plain;weight=2"


@pytest.mark.parametrize(("weight", "field"), [(1, b"team"), (3, b"team;weight=3")])
def test_a_request_sent_ahead_of_its_checks_carries_its_weight(weight: int, field: bytes) -> None:
    caller = Principal("team", "zs-team", False, models=(frozenset({"m"}),), weight=weight)

    async def main() -> None:
        async with _running(caller) as (worker, gw, hot):
            cycle = await _serve(hot, gw, _body())
            assert cycle.answers[0][0] == 200
            assert b"\r\nx-zhisuan-tenant: " + field + b"\r\n" in worker.heads[-1].lower()

    asyncio.run(main())
