"""The admin API end to end on a real store: tenants, keys, deployments and usage summaries.

The gateway app runs in-process with auth on; its cluster backend is a null one that keeps
the desired replicas as specs, so deployments are checked without starting workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _null_backend import NullBackend
from fastapi.testclient import TestClient

from zhisuan.gateway import create_app
from zhisuan.settings import Settings
from zhisuan.store import Store, open_store

ADMIN = "zs-admin-api-test-key-0123456789"
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}
LIMIT = 4096


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[TestClient, NullBackend, Store]]:
    settings = Settings(home=tmp_path, auth="on", admin_key=ADMIN, max_body_bytes=LIMIT)
    backend = NullBackend()
    with open_store(settings) as store:
        app = create_app(settings, store=store, backend=backend)
        with TestClient(app) as client:
            yield client, backend, store


def test_admin_routes_need_the_admin_key(gateway: tuple[TestClient, Any, Store]) -> None:
    client, _, _ = gateway
    assert client.get("/admin/tenants").status_code == 401
    made = client.post("/admin/tenants", json={"name": "acme"}, headers=AS_ADMIN).json()
    key = client.post("/admin/keys", json={"tenant": made["name"]}, headers=AS_ADMIN).json()
    as_tenant = {"Authorization": f"Bearer {key['key']}"}
    assert client.get("/admin/tenants", headers=as_tenant).status_code == 403
    assert client.get("/health").status_code == 200
    stored = client.post("/admin/keys", json={"admin": True}, headers=AS_ADMIN).json()["key"]
    listed = client.get("/admin/tenants", headers={"Authorization": f"Bearer {stored}"})
    assert [t["name"] for t in listed.json()] == ["acme"]  # a stored admin key, not the env's


def test_tenants_and_keys(gateway: tuple[TestClient, Any, Store]) -> None:
    client, _, _ = gateway
    made = client.post("/admin/tenants", json={"name": "acme", "rpm": 5}, headers=AS_ADMIN)
    assert made.status_code == 201 and made.json()["rpm"] == 5
    assert made.json()["currency"] == "USD"  # the prices' (ZHISUAN_CURRENCY)
    other = {"name": "euro", "budget": 5, "currency": "EUR"}
    refused = client.post("/admin/tenants", json=other, headers=AS_ADMIN)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "currency"
    assert "a budget in EUR cannot be kept" in refused.json()["error"]["message"]
    changed = client.patch("/admin/tenants/acme", json={"rpm": 7}, headers=AS_ADMIN)
    assert changed.json()["rpm"] == 7
    assert client.get("/admin/tenants/acme", headers=AS_ADMIN).json()["rpm"] == 7
    key = client.post("/admin/keys", json={"tenant": "acme", "models": ["m"]}, headers=AS_ADMIN)
    assert key.status_code == 201
    secret, prefix = key.json()["key"], key.json()["prefix"]
    assert secret.startswith(prefix)
    listed = client.get("/admin/keys", params={"tenant": "acme"}, headers=AS_ADMIN).json()
    assert [k["prefix"] for k in listed] == [prefix]
    assert secret not in str(listed)  # the secret is shown once, at creation
    as_key = {"Authorization": f"Bearer {secret}"}
    assert client.get("/v1/models", headers=as_key).status_code == 200
    changed = client.patch(
        f"/admin/keys/{prefix}", json={"rpm": 1, "models": None}, headers=AS_ADMIN
    )
    assert (changed.json()["rpm"], changed.json()["models"]) == (1, None)
    chat = {"model": "other", "messages": [{"role": "user", "content": "hi"}]}
    first = client.post("/v1/chat/completions", json=chat, headers=as_key)
    assert first.status_code == 404  # any model now, though none is deployed
    second = client.post("/v1/chat/completions", json=chat, headers=as_key)
    assert second.json()["error"]["code"] == "requests_per_minute_exceeded"  # at once
    assert (
        client.patch("/admin/keys/zs-nothere00", json={"rpm": 2}, headers=AS_ADMIN).status_code
        == 404
    )
    assert client.delete(f"/admin/keys/{prefix}", headers=AS_ADMIN).status_code == 200
    assert client.get("/v1/models", headers=as_key).status_code == 401  # at once


def test_deployments_reach_the_backend_and_bad_options_are_refused(
    gateway: tuple[TestClient, NullBackend, Store],
) -> None:
    client, backend, _ = gateway
    for options, named in (
        ({"price_input_per_mtok": "x"}, "options.price_input_per_mtok"),
        ({"cost_per_hour": -1}, "options.cost_per_hour"),
        ({"power_w": True}, "options.power_w"),
        ({"context_length": 0.5}, "options.context_length"),
        ({"budget_deadline_s": 0}, "options.budget_deadline_s"),
        ({"budget_deadline_s": "5"}, "options.budget_deadline_s"),
        ({"queue": "lifo"}, "options.queue"),
        ({"base_url": "http://u/v1", "timeuot": 5}, "did you mean timeout?"),
        ({"base_url": "http://u/v1", "max_batch": 8}, "no upstream deployment option"),
    ):
        body = {"model": "m", "engine": "upstream", "options": options}
        refused = client.post("/admin/deployments", json=body, headers=AS_ADMIN)
        assert refused.status_code in (400, 422), refused.text
        assert named in refused.text
    assert backend.specs == [] and client.get("/admin/deployments", headers=AS_ADMIN).json() == []
    options = {"base_url": "http://u/v1", "cost_per_hour": 2.5}
    body = {"model": "m", "engine": "upstream", "replicas": 2, "options": options}
    assert client.post("/admin/deployments", json=body, headers=AS_ADMIN).status_code == 201
    assert [(s.model, s.index) for s in backend.specs] == [("m", 0), ("m", 1)]
    assert dict(backend.specs[0].options)["cost_per_hour"] == 2.5
    assert client.delete("/admin/deployments/m", headers=AS_ADMIN).status_code == 200
    assert backend.specs == []


def _record(request_id: str, tenant: str, model: str) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "tenant": tenant,
        "model": model,
        "endpoint": "chat.completions",
        "status": "ok",
        "http_status": 200,
        "prompt_tokens": 3,
        "completion_tokens": 4,
    }


def test_usage_summaries_keep_every_filter(gateway: tuple[TestClient, Any, Store]) -> None:
    client, _, store = gateway
    client.post("/admin/tenants", json={"name": "acme"}, headers=AS_ADMIN)
    secret = client.post("/admin/keys", json={"tenant": "acme"}, headers=AS_ADMIN).json()["key"]
    store.add_usage(
        [_record("1", "acme", "a"), _record("2", "acme", "b"), _record("3", "beta", "a")]
    )
    by_model = client.get(
        "/admin/usage", params={"by": "model", "model": "a"}, headers=AS_ADMIN
    ).json()
    assert [(r["model"], r["requests"]) for r in by_model] == [("a", 2)]
    later = client.get(
        "/admin/usage", params={"by": "model", "until": "2000-01-01T00:00:00Z"}, headers=AS_ADMIN
    )
    assert later.json() == []
    own = client.get(
        "/v1/usage",
        params={"by": "model", "model": "b"},
        headers={"Authorization": f"Bearer {secret}"},
    ).json()
    assert [(r["model"], r["requests"]) for r in own] == [("b", 1)]


@pytest.mark.parametrize("path", ["/admin/tenants", "/v1/chat/completions"])
def test_a_chunked_body_over_the_limit_is_413(
    gateway: tuple[TestClient, Any, Store], path: str
) -> None:
    client, _, store = gateway
    big = b'{"name": "' + b"a" * LIMIT + b'"}'
    chunks = iter([big[:1000], big[1000:]])  # no content-length: counted as it comes
    answer = client.post(
        path, content=chunks, headers={**AS_ADMIN, "content-type": "application/json"}
    )
    assert answer.status_code == 413
    assert answer.json()["error"]["message"] == f"Request body exceeds the limit of {LIMIT} bytes."
    assert store.list_tenants() == []


@pytest.mark.parametrize("access", ["open", "admin"])
def test_who_may_read_the_metrics(tmp_path: Path, access: str) -> None:
    settings = Settings(home=tmp_path, auth="on", admin_key=ADMIN, metrics_access=access)
    with open_store(settings) as store:
        app = create_app(settings, store=store, backend=NullBackend())
        with TestClient(app) as client:
            client.post("/admin/tenants", json={"name": "acme"}, headers=AS_ADMIN)
            key = client.post("/admin/keys", json={"tenant": "acme"}, headers=AS_ADMIN).json()
            as_tenant = {"Authorization": f"Bearer {key['key']}"}
            codes = [
                client.get("/metrics", headers=headers).status_code
                for headers in ({}, as_tenant, AS_ADMIN)
            ]
            assert client.get("/health").status_code == 200
    assert codes == ([200, 200, 200] if access == "open" else [401, 403, 200])


def test_a_budget_in_another_currency_is_named_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(home=tmp_path, auth="on", admin_key=ADMIN, currency="CNY")
    with open_store(settings) as store:
        store.create_tenant("before", budget=50.0, currency="USD")  # ZHISUAN_CURRENCY changed
        store.create_tenant("same", budget=50.0, currency="CNY")
        store.create_tenant("unbudgeted", currency="USD")
        with TestClient(create_app(settings, store=store, backend=NullBackend())):
            pass
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned == [
        "tenant before has a budget of 50 USD, but prices and costs are in CNY: it is kept as "
        "50 CNY (restate it: zhisuan tenants set before --currency CNY --budget AMOUNT)"
    ]
