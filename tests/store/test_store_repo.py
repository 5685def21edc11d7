"""Repository functions for models and deployments, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC

import pytest

from zhisuan.errors import InvalidParameter, NotFound, UserError
from zhisuan.store import Model, Store

FILES = [{"name": "model.safetensors", "bytes": 123, "sha256": "ab" * 32}]


def _model(name: str, **kw: object) -> Model:
    fields: dict[str, object] = {
        "name": name,
        "format": "hf",
        "task": "chat",
        "path": f"/models/{name}",
        "source_path": f"/src/{name}",
        "param_count": 7_000_000_000_000,  # beyond 32 bits: BigInteger
        "bytes_on_disk": 14_000_000_000,
        "files": FILES,
    }
    fields.update(kw)
    return Model(**fields)


def test_add_get_list_roundtrip(store: Store) -> None:
    store.add_model(_model("qwen2.5-0.5b"))
    store.add_model(_model("llama-3.2-1b", format="gguf", licence="commercial"))
    got = store.get_model("qwen2.5-0.5b")
    assert got.id is not None
    assert got.param_count == 7_000_000_000_000
    assert got.files == FILES
    assert got.licence == "research"
    assert got.linked is False
    assert got.created_at.tzinfo is not None
    assert got.created_at.utcoffset() == UTC.utcoffset(None)
    assert [m.name for m in store.list_models()] == ["llama-3.2-1b", "qwen2.5-0.5b"]
    d = got.to_dict()
    assert d["name"] == "qwen2.5-0.5b"
    assert isinstance(d["created_at"], str)


def test_get_unknown_model_suggests_close_names(store: Store) -> None:
    store.add_model(_model("qwen2.5-0.5b"))
    with pytest.raises(NotFound) as info:
        store.get_model("qwen2.5-05b")
    assert info.value.suggestions == ["qwen2.5-0.5b"]
    assert info.value.hint is not None and "qwen2.5-0.5b" in info.value.hint
    assert store.find_model("nope") is None


def test_duplicate_name_is_a_user_error(store: Store) -> None:
    store.add_model(_model("m"))
    with pytest.raises(UserError, match="already exists") as info:
        store.add_model(_model("m"))
    assert info.value.hint is not None and "--name" in info.value.hint
    with pytest.raises(UserError):
        store.check_name_free("m")
    store.check_name_free("other")
    assert len(store.list_models()) == 1


def test_failing_finalize_commits_nothing(store: Store) -> None:
    def boom() -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        store.add_model(_model("m"), finalize=boom)
    assert store.list_models() == []


def test_remove_model(store: Store) -> None:
    store.add_model(_model("m"))
    removed = store.remove_model("m")
    assert removed.name == "m"
    assert store.list_models() == []
    with pytest.raises(NotFound):
        store.remove_model("m")


def test_local_deployment_needs_an_imported_model(store: Store) -> None:
    with pytest.raises(NotFound, match="needs an imported model"):
        store.put_deployment("ghost", engine="transformers")
    assert store.list_deployments() == []


def test_upstream_deployment_needs_no_model(store: Store) -> None:
    dep = store.put_deployment(
        "gpt-upstream",
        engine="upstream",
        options={"base_url": "http://10.0.0.5:8000/v1", "api_key_env": "UPSTREAM_KEY"},
    )
    assert dep.options["base_url"] == "http://10.0.0.5:8000/v1"
    assert store.get_deployment("gpt-upstream").engine == "upstream"


def test_put_deployment_replaces(store: Store) -> None:
    store.add_model(_model("m"))
    first = store.put_deployment("m", engine="transformers")
    second = store.put_deployment(
        "m", engine="transformers", device="cuda:0", replicas=3, options={"max_batch": 8}
    )
    assert second.id == first.id
    [dep] = store.list_deployments()
    assert (dep.device, dep.replicas, dep.options) == ("cuda:0", 3, {"max_batch": 8})


def test_deployed_model_cannot_be_removed(store: Store) -> None:
    store.add_model(_model("m"))
    store.put_deployment("m", engine="transformers")
    with pytest.raises(UserError, match="is deployed") as info:
        store.remove_model("m")
    assert info.value.hint is not None and "undeploy" in info.value.hint
    assert store.find_model("m") is not None
    store.remove_deployment("m")
    store.remove_model("m")
    assert store.list_models() == []


def test_remove_unknown_deployment(store: Store) -> None:
    store.put_deployment("alpha", engine="upstream")
    with pytest.raises(NotFound) as info:
        store.remove_deployment("alpah")
    assert info.value.suggestions == ["alpha"]


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [({"engine": "vllm"}, "engine"), ({"engine": "upstream", "replicas": 0}, "replicas")],
)
def test_bad_deployment_parameters(store: Store, kwargs: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        store.put_deployment("x", **kwargs)  # type: ignore[arg-type]
    assert info.value.param == param


def test_check_removable_and_find_deployment(store: Store) -> None:
    store.add_model(_model("m"))
    assert store.check_removable("m").name == "m"
    assert store.find_deployment("m") is None
    store.put_deployment("m", engine="llamacpp", device="cpu")
    assert store.find_deployment("m") is not None
    with pytest.raises(UserError, match="is deployed"):
        store.check_removable("m")
    with pytest.raises(NotFound):
        store.check_removable("n")
