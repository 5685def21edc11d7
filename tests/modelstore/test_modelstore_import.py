"""Import and removal: copies and links, checksums, and all-or-nothing failures (both DBs)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from tiny_artifacts import LLAMA_PARAMS

from zhisuan.errors import ImportRefused, InvalidParameter, NotFound, UserError
from zhisuan.modelstore import _import as import_mod
from zhisuan.modelstore import default_name, import_model, remove_model, validate_name
from zhisuan.settings import Settings
from zhisuan.store import Store


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(store: Store, settings: Settings) -> tuple[list[str], list[str]]:
    """The model names in the database and every entry under models_dir (hidden ones too)."""
    names = [m.name for m in store.list_models()]
    entries = (
        sorted(str(p.relative_to(settings.models_dir)) for p in settings.models_dir.rglob("*"))
        if settings.models_dir.exists()
        else []
    )
    return names, entries


def test_import_copies_and_records_everything(
    store: Store, settings: Settings, tiny_llama: Path
) -> None:
    seen: list[tuple[str, int, int]] = []
    model = import_model(
        store, settings, tiny_llama, licence="commercial", progress=lambda *a: seen.append(a)
    )
    assert model.name == "tiny-llama"  # from the directory name, lowercased
    dest = settings.models_dir / "tiny-llama"
    assert model.path == str(dest)
    assert model.source_path == str(tiny_llama.resolve())
    assert not model.linked
    assert (model.format, model.task, model.architecture) == ("hf", "chat", "llama")
    assert model.param_count == LLAMA_PARAMS
    assert (model.num_layers, model.hidden_size, model.num_heads, model.num_kv_heads) == (
        2,
        16,
        4,
        2,
    )
    assert (model.context_length, model.dtype, model.licence) == (128, "float16", "commercial")
    weights = tiny_llama / "model.safetensors"
    assert model.files == [
        {"name": "model.safetensors", "bytes": weights.stat().st_size, "sha256": _sha256(weights)}
    ]
    assert sorted(p.name for p in dest.iterdir()) == sorted(p.name for p in tiny_llama.iterdir())
    assert _sha256(dest / "model.safetensors") == _sha256(weights)
    assert seen[-1][1] == seen[-1][2] == model.bytes_on_disk
    assert store.get_model("tiny-llama").files == model.files
    assert _snapshot(store, settings)[1] == sorted(
        ["tiny-llama", *(f"tiny-llama/{p.name}" for p in tiny_llama.iterdir())]
    )


def test_import_gguf(store: Store, settings: Settings, tiny_gguf: Path) -> None:
    model = import_model(store, settings, tiny_gguf, name="tiny:f16")
    assert model.format == "gguf"
    assert model.path == str(settings.models_dir / "tiny:f16" / "Tiny-Llama-F16.gguf")
    assert Path(model.path).read_bytes() == tiny_gguf.read_bytes()
    assert model.files[0]["sha256"] == _sha256(tiny_gguf)
    assert model.param_count == LLAMA_PARAMS
    assert default_name(tiny_gguf) == "tiny-llama-f16"


def test_link_records_the_original_and_rm_keeps_it(
    store: Store, settings: Settings, tiny_gguf: Path
) -> None:
    model = import_model(store, settings, tiny_gguf, link=True)
    assert model.linked and model.path == str(tiny_gguf.resolve())
    assert model.files[0]["sha256"] == _sha256(tiny_gguf)
    assert not (settings.models_dir / model.name).exists()
    remove_model(store, settings, model.name)
    assert tiny_gguf.is_file()
    assert store.list_models() == []


def test_rm_deletes_copied_files(store: Store, settings: Settings, tiny_llama: Path) -> None:
    import_model(store, settings, tiny_llama, name="m")
    removed = remove_model(store, settings, "m")
    assert removed.name == "m"
    assert _snapshot(store, settings) == ([], [])
    assert (tiny_llama / "model.safetensors").is_file()  # the source is untouched


def test_rm_of_deployed_model_keeps_row_and_files(
    store: Store, settings: Settings, tiny_llama: Path
) -> None:
    import_model(store, settings, tiny_llama, name="m")
    store.put_deployment("m", engine="transformers")
    before = _snapshot(store, settings)
    with pytest.raises(UserError, match="is deployed") as info:
        remove_model(store, settings, "m")
    assert info.value.hint is not None and "undeploy" in info.value.hint
    assert _snapshot(store, settings) == before


def test_rm_unknown_suggests(store: Store, settings: Settings, tiny_llama: Path) -> None:
    import_model(store, settings, tiny_llama, name="tiny-llama")
    with pytest.raises(NotFound) as info:
        remove_model(store, settings, "tiny-lama")
    assert info.value.suggestions == ["tiny-llama"]


@pytest.mark.parametrize("fixture", ["truncated_llama", "pickle_only", "config_less"])
def test_refused_inputs_change_nothing(
    store: Store, settings: Settings, tiny_llama: Path, fixture: str, request: pytest.FixtureRequest
) -> None:
    import_model(store, settings, tiny_llama, name="existing")
    before = _snapshot(store, settings)
    with pytest.raises(ImportRefused):
        import_model(store, settings, request.getfixturevalue(fixture))
    assert _snapshot(store, settings) == before


def test_name_clash_changes_nothing(
    store: Store, settings: Settings, tiny_llama: Path, tiny_gguf: Path
) -> None:
    import_model(store, settings, tiny_llama, name="m")
    before = _snapshot(store, settings)
    with pytest.raises(UserError, match="already exists"):
        import_model(store, settings, tiny_gguf, name="m")
    assert _snapshot(store, settings) == before
    assert store.get_model("m").format == "hf"


def test_stray_destination_directory_is_refused(
    store: Store, settings: Settings, tiny_llama: Path
) -> None:
    (settings.models_dir / "m").mkdir(parents=True)
    with pytest.raises(ImportRefused, match="already exists but no model 'm' is recorded"):
        import_model(store, settings, tiny_llama, name="m")
    assert _snapshot(store, settings) == ([], ["m"])


def test_failure_while_copying_removes_the_staged_copy(
    store: Store, settings: Settings, tiny_llama: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def progress(file: str, done: int, total: int) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        import_model(store, settings, tiny_llama, progress=progress)
    assert _snapshot(store, settings) == ([], [])


def test_failed_commit_after_the_move_removes_the_files(
    store: Store, settings: Settings, tiny_llama: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_add = store.add_model

    def add_then_fail(model: object, *, finalize: object = None) -> object:
        def finalize_then_fail() -> None:
            finalize()  # type: ignore[operator]
            raise RuntimeError("database went away")

        return real_add(model, finalize=finalize_then_fail)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "add_model", add_then_fail)
    with pytest.raises(RuntimeError, match="went away"):
        import_model(store, settings, tiny_llama)
    assert _snapshot(store, settings) == ([], [])


def test_interrupt_cleans_up(store: Store, settings: Settings, tiny_llama: Path) -> None:
    def progress(file: str, done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_model(store, settings, tiny_llama, progress=progress)
    assert _snapshot(store, settings) == ([], [])


def test_allow_pickle_imports_pickle_weights(
    store: Store, settings: Settings, pickle_only: Path
) -> None:
    model = import_model(store, settings, pickle_only, allow_pickle=True)
    assert model.param_count == LLAMA_PARAMS
    assert [f["name"] for f in model.files] == ["pytorch_model.bin"]


def test_task_override_and_embedding_detection(
    store: Store, settings: Settings, tiny_bert: Path, tiny_llama: Path
) -> None:
    assert import_model(store, settings, tiny_bert).task == "embedding"
    assert import_model(store, settings, tiny_llama, task="embedding").task == "embedding"


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [({"licence": "gpl"}, "licence"), ({"task": "vision"}, "task"), ({"name": "Bad Name"}, "name")],
)
def test_bad_parameters(
    store: Store, settings: Settings, tiny_llama: Path, kwargs: dict[str, str], param: str
) -> None:
    with pytest.raises(InvalidParameter) as info:
        import_model(store, settings, tiny_llama, **kwargs)  # type: ignore[arg-type]
    assert info.value.param == param
    assert _snapshot(store, settings) == ([], [])


@pytest.mark.parametrize("name", ["qwen2.5-0.5b", "llama3:8b-q4_k_m", "a", "x" * 64])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "Qwen", "-x", ".hidden", "..", "a/b", "x" * 65, "名字"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidParameter, match="invalid model name"):
        validate_name(name)


def test_default_name_sanitises(tmp_path: Path) -> None:
    d = tmp_path / "Qwen2.5 0.5B Instruct"
    d.mkdir()
    assert default_name(d) == "qwen2.5-0.5b-instruct"
    assert import_mod.STAGING_PREFIX.startswith(".")  # staging dirs never look like models


def test_default_name_of_the_current_directory(
    tiny_llama: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tiny_llama)
    assert default_name(Path(".")) == "tiny-llama"
