"""A tenant's weight through the admin API on a real store (in-process, auth on): taken and
returned by every tenant route, in the OpenAPI schema, and refused outside 1-100 with the
reason and hint the CLI prints (``tests/cli/test_weights_cli.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _null_backend import NullBackend
from fastapi.testclient import TestClient

from zhisuan.gateway import create_app
from zhisuan.settings import Settings
from zhisuan.store import open_store

ADMIN = "zs-admin-weights-test-key-0123456789"
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}
HINT = (
    "give 1 to 100 (the default is 1): a tenant of weight N has up to N requests started per "
    "turn in a replica's queue"
)
WEIGHT_SCHEMA = {"type": "integer", "minimum": 1, "maximum": 100}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(home=tmp_path, auth="on", admin_key=ADMIN)
    with open_store(settings) as store:
        app = create_app(settings, store=store, backend=NullBackend())
        with TestClient(app, headers=AS_ADMIN) as c:
            yield c


def _weights(client: TestClient) -> dict[str, int]:
    return {t["name"]: t["weight"] for t in client.get("/admin/tenants").json()}


def test_the_admin_api_takes_and_returns_a_weight(client: TestClient) -> None:
    made = client.post("/admin/tenants", json={"name": "research", "weight": 3, "rpm": 5})
    assert made.status_code == 201 and made.json()["weight"] == 3
    assert client.post("/admin/tenants", json={"name": "plain"}).json()["weight"] == 1
    assert _weights(client) == {"plain": 1, "research": 3}
    assert client.get("/admin/tenants/research").json()["weight"] == 3

    changed = client.patch("/admin/tenants/plain", json={"weight": 7})
    assert changed.status_code == 200 and changed.json()["weight"] == 7
    kept = client.patch("/admin/tenants/research", json={"rpm": 9}).json()
    assert (kept["rpm"], kept["weight"]) == (9, 3)  # a field left out keeps its value
    assert client.patch("/admin/tenants/plain", json={"weight": None}).json()["weight"] == 1
    assert _weights(client) == {"plain": 1, "research": 3}


@pytest.mark.parametrize("weight", [0, 101, -3])
def test_a_weight_outside_1_to_100_is_refused_with_the_clis_reason_and_hint(
    client: TestClient, weight: int
) -> None:
    client.post("/admin/tenants", json={"name": "beta", "weight": 2})
    refusals = [
        client.post("/admin/tenants", json={"name": "acme", "weight": weight}),
        client.patch("/admin/tenants/beta", json={"weight": weight}),
    ]
    for answer in refusals:
        assert answer.status_code == 400, answer.text
        assert answer.json() == {
            "error": {
                "message": f"weight must be a whole number from 1 to 100, got {weight}",
                "type": "invalid_request_error",
                "param": "weight",
                "code": "invalid_parameter",
                "hint": HINT,
            }
        }
    assert _weights(client) == {"beta": 2}  # nothing written


def test_the_schema_states_the_weight_of_a_new_tenant_and_of_a_change(client: TestClient) -> None:
    spec: dict[str, Any] = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    created = schemas["TenantIn"]["properties"]["weight"]
    assert {k: created[k] for k in WEIGHT_SCHEMA} == WEIGHT_SCHEMA and created["default"] == 1
    assert "replica's queue" in created["description"]
    patch = spec["paths"]["/admin/tenants/{name}"]["patch"]["requestBody"]["content"]
    ref = patch["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    changed = schemas[ref]["properties"]["weight"]
    assert changed["anyOf"] == [WEIGHT_SCHEMA, {"type": "null"}]
    assert changed["description"].endswith("Null: 1.")
    assert "weight" not in schemas["KeyIn"]["properties"]  # a key has none of its own
