"""``POST /admin/deployments`` as ``zhisuan deploy``: what the body leaves out is kept, the
engine follows the model's format, and what no engine can run (a mismatched engine, an
upstream without an http(s) base_url, a name the model-name rule refuses, a non-boolean
flag) is a 400 that stores nothing. In-process, with a backend that runs nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _null_backend import NullBackend
from fastapi.testclient import TestClient

from zhisuan.gateway import create_app
from zhisuan.settings import Settings
from zhisuan.store import Model, Store, open_store

ADMIN = "zs-admin-deployments-test-key-0123"
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}
UPSTREAM = {"base_url": "http://10.0.0.5:8000/v1"}


def _model(name: str, fmt: str) -> Model:
    return Model(
        name=name, format=fmt, task="chat", path=f"/models/{name}", source_path=f"/src/{name}",
        bytes_on_disk=1, files=[],
    )  # fmt: skip


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, Store]]:
    settings = Settings(home=tmp_path, auth="on", admin_key=ADMIN)
    with open_store(settings) as store:
        store.add_model(_model("hf", "hf"))
        store.add_model(_model("g", "gguf"))
        with TestClient(create_app(settings, store=store, backend=NullBackend())) as client:
            yield client, store


def _post(client: TestClient, body: dict[str, Any]) -> Any:
    return client.post("/admin/deployments", json=body, headers=AS_ADMIN)


def test_a_change_keeps_what_the_body_leaves_out(api: tuple[TestClient, Store]) -> None:
    client, store = api
    first = {"model": "hf", "replicas": 2, "options": {"max_batch": 4, "price_input_per_mtok": 1}}
    assert _post(client, first).status_code == 201
    changed = _post(client, {"model": "hf", "options": {"price_input_per_mtok": 3}})
    assert changed.status_code == 201, changed.text
    dep = store.get_deployment("hf")
    assert (dep.engine, dep.device, dep.replicas) == ("transformers", "cpu", 2)
    assert dep.options == {"max_batch": 4, "price_input_per_mtok": 3}
    removed = _post(client, {"model": "hf", "options": {"max_batch": None}, "replicas": 1})
    assert removed.status_code == 201, removed.text
    assert store.get_deployment("hf").options == {"price_input_per_mtok": 3}
    assert store.get_deployment("hf").replicas == 1


def test_the_engine_follows_the_models_format(api: tuple[TestClient, Store]) -> None:
    client, store = api
    made = _post(client, {"model": "g"})
    assert made.status_code == 201 and made.json()["engine"] == "llamacpp"
    assert store.get_deployment("g").engine == "llamacpp"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"model": "g", "engine": "transformers"}, "model 'g' is a GGUF file"),
        ({"model": "hf", "engine": "llamacpp"}, "model 'hf' is an HF-format directory"),
        ({"model": "up1", "engine": "upstream"}, "an upstream deployment needs a base_url"),
        (
            {"model": "up1", "engine": "upstream", "options": {"base_url": "ftp://h/v1"}},
            "not 'ftp://h/v1'",
        ),
        ({"model": "a/b", "engine": "upstream", "options": UPSTREAM}, "invalid model name 'a/b'"),
        ({"model": "Up", "engine": "upstream", "options": UPSTREAM}, "invalid model name 'Up'"),
        (
            {"model": "hf", "options": {"embed_group": "False"}},
            "options.embed_group must be true or false, not 'False'",
        ),
        (
            {"model": "up1", "engine": "upstream", "options": {**UPSTREAM, "check": "no"}},
            "options.check must be true or false",
        ),
    ],
)
def test_what_no_engine_can_run_is_a_400_and_not_stored(
    api: tuple[TestClient, Store], body: dict[str, Any], error: str
) -> None:
    client, store = api
    refused = _post(client, body)
    assert refused.status_code == 400, refused.text
    assert error in refused.json()["error"]["message"]
    assert store.list_deployments() == []


def test_a_kept_option_the_new_engine_does_not_read_is_named(
    api: tuple[TestClient, Store],
) -> None:
    client, store = api
    assert _post(client, {"model": "g", "options": {"n_ctx": 256}}).status_code == 201
    refused = _post(client, {"model": "g", "engine": "upstream", "options": UPSTREAM})
    assert refused.status_code == 400
    assert "keeps option 'n_ctx'" in refused.json()["error"]["message"]
    assert store.get_deployment("g").engine == "llamacpp"
    body = {"model": "g", "engine": "upstream", "options": {**UPSTREAM, "n_ctx": None}}
    assert _post(client, body).status_code == 201
    assert store.get_deployment("g").options == UPSTREAM
