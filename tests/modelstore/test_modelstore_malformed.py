"""Inputs built to mislead the inspectors: GGUF headers whose lengths run past the end of the
file, and HF directories that link back into themselves; and the README's import-then-deploy
example naming the model the import makes."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from tiny_artifacts import LLAMA_PARAMS

from zhisuan.errors import ImportRefused
from zhisuan.modelstore import default_name, import_model, inspect_path, validate_name
from zhisuan.settings import Settings
from zhisuan.store import Store

README = Path(__file__).resolve().parents[2] / "README.md"
U64_MAX = 2**64 - 1


def _header(n_tensors: int, n_kv: int) -> bytes:
    return b"GGUF" + struct.pack("<I", 3) + struct.pack("<QQ", n_tensors, n_kv)


def _key(name: bytes) -> bytes:
    return struct.pack("<Q", len(name)) + name


MALFORMED = {
    "key_of_2_64": _header(0, 1) + struct.pack("<Q", U64_MAX) + b"x" * 64,
    "key_of_2_40": _header(0, 1) + struct.pack("<Q", 2**40) + b"x" * 64,
    "string_of_2_64": _header(0, 1) + _key(b"k") + struct.pack("<IQ", 8, U64_MAX) + b"x" * 64,
    "u8_array_of_2_63": _header(0, 1) + _key(b"k") + struct.pack("<IIQ", 9, 0, 2**63) + b"x" * 64,
    "string_array_of_2_63": (
        _header(0, 1) + _key(b"k") + struct.pack("<IIQ", 9, 8, 2**63) + b"x" * 64
    ),
    "tensor_name_of_2_64": _header(1, 0) + struct.pack("<Q", U64_MAX) + b"x" * 64,
    "tensor_of_2_32_dims": _header(1, 0) + _key(b"t") + struct.pack("<I", 2**32 - 1) + b"x" * 64,
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_length_past_the_end_of_a_gguf_is_an_import_refusal(
    tmp_path: Path, store: Store, settings: Settings, name: str
) -> None:
    path = tmp_path / f"{name}.gguf"
    path.write_bytes(MALFORMED[name])
    size = path.stat().st_size
    with pytest.raises(ImportRefused, match=f"its header ends early at byte {size}") as info:
        inspect_path(path)
    assert info.value.hint is not None and "download it again" in info.value.hint
    with pytest.raises(ImportRefused):
        import_model(store, settings, path, name="m")
    assert store.list_models() == []


def test_a_link_back_into_the_directory_counts_nothing_twice(
    tiny_llama: Path, store: Store, settings: Settings
) -> None:
    plain = inspect_path(tiny_llama)
    (tiny_llama / "again").symlink_to(".")
    (tiny_llama / "sub").mkdir()
    (tiny_llama / "sub" / "up").symlink_to("..")
    looped = inspect_path(tiny_llama)
    assert looped.param_count == plain.param_count == LLAMA_PARAMS
    assert looped.files == plain.files
    assert looped.bytes_on_disk == plain.bytes_on_disk
    row = import_model(store, settings, tiny_llama, name="looped", link=True)
    assert [f["name"] for f in row.files] == ["model.safetensors"]


def test_the_readme_deploys_the_names_its_imports_make(tmp_path: Path) -> None:
    """Each local ``zhisuan deploy NAME`` of the README names a model one of its ``zhisuan
    models import PATH`` lines makes (the default name: lowercased)."""
    text = README.read_text()
    made = set()
    for source in re.findall(r"^zhisuan models import (\S+)", text, flags=re.M):
        stand_in = tmp_path / Path(source).name
        if stand_in.suffix == ".gguf":
            stand_in.write_bytes(b"GGUF")
        else:
            stand_in.mkdir()
        made.add(default_name(stand_in))
    deployed = [
        name
        for name, rest in re.findall(r"^zhisuan deploy (\S+)(.*)$", text, flags=re.M)
        if "--engine upstream" not in rest
    ]
    in_example = [n for n in deployed if n.startswith("qwen") or n.startswith("Qwen")]
    assert in_example, "the README's import-then-deploy example is gone"
    for name in in_example:
        assert validate_name(name) and name in made, f"README deploys {name!r}; imports: {made}"
