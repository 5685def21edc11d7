"""``Store.deploy``: a change keeps what it does not give, in one transaction; the engine
follows the model's format; what the engine cannot run is refused and leaves the deployment
as it was; an unknown deployment's error says what is deployed."""

from __future__ import annotations

from typing import Any

import pytest

from zhisuan.errors import InvalidParameter, NotFound
from zhisuan.store import Model, Store

URL = {"base_url": "http://10.0.0.5:8000/v1"}


def _model(name: str, fmt: str) -> Model:
    return Model(
        name=name, format=fmt, task="chat", path=f"/models/{name}", source_path=f"/src/{name}",
        bytes_on_disk=1, files=[],
    )  # fmt: skip


@pytest.fixture
def models(store: Store) -> Store:
    store.add_model(_model("hf", "hf"))
    store.add_model(_model("g", "gguf"))
    return store


def _row(store: Store, name: str) -> tuple[str, str, int, dict[str, Any]]:
    d = store.get_deployment(name)
    return d.engine, d.device, d.replicas, d.options


def test_a_change_keeps_what_it_does_not_give(models: Store) -> None:
    first = models.deploy("hf", replicas=2, device="cuda:0", options={"a": 1, "b": 2})
    assert _row(models, "hf") == ("transformers", "cuda:0", 2, {"a": 1, "b": 2})
    again = models.deploy("hf", options={"b": 3, "a": None, "c": 4})
    assert again.id == first.id
    assert _row(models, "hf") == ("transformers", "cuda:0", 2, {"b": 3, "c": 4})
    models.deploy("hf", replicas=1)
    assert _row(models, "hf") == ("transformers", "cuda:0", 1, {"b": 3, "c": 4})


def test_new_deployments_take_the_defaults_and_the_engine_of_the_format(models: Store) -> None:
    assert _row(models, models.deploy("g").model_name) == ("llamacpp", "cpu", 1, {})
    assert models.deploy("hf").engine == "transformers"
    with pytest.raises(NotFound, match="a transformers deployment needs an imported model"):
        models.deploy("ghost")


@pytest.mark.parametrize(
    ("name", "kwargs", "param"),
    [
        ("g", {"engine": "transformers"}, "engine"),
        ("hf", {"engine": "llamacpp"}, "engine"),
        ("hf", {"engine": "vllm"}, "engine"),
        ("hf", {"replicas": 0}, "replicas"),
        ("up", {"engine": "upstream"}, "options.base_url"),
        ("up", {"engine": "upstream", "options": {"base_url": "ftp://h/v1"}}, "options.base_url"),
        ("up", {"engine": "upstream", "options": {"base_url": "http://"}}, "options.base_url"),
    ],
)
def test_what_the_engine_cannot_run_is_refused(
    models: Store, name: str, kwargs: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidParameter) as info:
        models.deploy(name, **kwargs)
    assert info.value.param == param
    assert models.list_deployments() == []


def test_check_sees_the_result_and_what_it_raises_changes_nothing(models: Store) -> None:
    models.deploy("up", engine="upstream", options={**URL, "timeout": 5})
    seen: list[tuple[str, dict[str, Any]]] = []

    def check(engine: str, options: dict[str, Any]) -> None:
        seen.append((engine, options))
        raise InvalidParameter("no")

    with pytest.raises(InvalidParameter):
        models.deploy("up", replicas=3, options={"timeout": None, "x": 1}, check=check)
    assert seen == [("upstream", {**URL, "x": 1})]
    assert _row(models, "up") == ("upstream", "cpu", 1, {**URL, "timeout": 5})


def test_an_unknown_deployment_names_the_deployed_ones(models: Store) -> None:
    with pytest.raises(NotFound) as info:
        models.remove_deployment("nope")
    assert info.value.hint == "nothing is deployed"
    models.deploy("hf")
    models.deploy("up", engine="upstream", options=URL)
    with pytest.raises(NotFound) as info:
        models.get_deployment("zzz")
    assert info.value.hint == "deployed: hf, up (`zhisuan ps` shows them)"
