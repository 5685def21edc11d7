"""Inspection of HF directories and GGUF files: facts from shapes, refusals with reasons."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import pytest
from tiny_artifacts import (
    CTX,
    HEADS,
    HIDDEN,
    KV_HEADS,
    LAYERS,
    LLAMA_F16_PARAMS,
    LLAMA_PARAMS,
    write_gguf,
)

from zhisuan.errors import ImportRefused
from zhisuan.modelstore import config_facts, inspect_path, read_header


def test_hf_llama_facts(tiny_llama: Path) -> None:
    info = inspect_path(tiny_llama)
    assert info.format == "hf"
    assert info.task == "chat"
    assert info.architecture == "llama"
    assert info.param_count == LLAMA_PARAMS == 5712
    assert (info.num_layers, info.hidden_size, info.num_heads, info.num_kv_heads) == (
        LAYERS,
        HIDDEN,
        HEADS,
        KV_HEADS,
    )
    assert info.context_length == CTX
    assert info.dtype == "float16"
    assert info.weight_files == ["model.safetensors"]
    assert set(info.files) == {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    assert info.bytes_on_disk == sum(f.stat().st_size for f in tiny_llama.iterdir())


def test_header_counts_per_dtype(tiny_llama: Path) -> None:
    header = read_header(tiny_llama / "model.safetensors")
    assert header.param_count == LLAMA_PARAMS
    assert header.params_by_dtype == {
        "float16": LLAMA_F16_PARAMS,
        "float32": LLAMA_PARAMS - LLAMA_F16_PARAMS,
    }
    assert header.tensors["lm_head.weight"] == ("F16", (32, 16))


def test_sharded_checkpoint_counts_every_shard(sharded_llama: Path) -> None:
    info = inspect_path(sharded_llama)
    assert info.param_count == LLAMA_PARAMS
    assert len(info.weight_files) == 2


def test_missing_shard_is_refused(sharded_llama: Path) -> None:
    (sharded_llama / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ImportRefused, match=r"shard model-00002-of-00002\.safetensors named in"):
        inspect_path(sharded_llama)


def test_index_naming_a_tensor_the_shard_lacks_is_refused(sharded_llama: Path) -> None:
    index_path = sharded_llama / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["extra.weight"] = "model-00001-of-00002.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(ImportRefused, match=r"'extra\.weight'"):
        inspect_path(sharded_llama)


def test_truncated_safetensors_names_file_and_sizes(
    truncated_llama: Path, tiny_llama: Path
) -> None:
    full = (tiny_llama / "model.safetensors").stat().st_size
    with pytest.raises(ImportRefused) as info:
        inspect_path(truncated_llama)
    assert str(info.value) == (
        f"model.safetensors is truncated: expected {full} bytes, found {full - 100}"
    )
    assert info.value.hint is not None and "download" in info.value.hint


def test_truncated_inside_the_header(tiny_llama: Path) -> None:
    f = tiny_llama / "model.safetensors"
    (header_len,) = struct.unpack("<Q", f.read_bytes()[:8])
    os.truncate(f, 20)
    with pytest.raises(
        ImportRefused, match=rf"expected at least {8 + header_len} bytes .* found 20"
    ):
        inspect_path(tiny_llama)
    os.truncate(f, 3)
    with pytest.raises(ImportRefused, match="3 bytes, too short"):
        inspect_path(tiny_llama)


def test_trailing_bytes_are_refused(tiny_llama: Path) -> None:
    with (tiny_llama / "model.safetensors").open("ab") as fh:
        fh.write(b"\0" * 10)
    with pytest.raises(ImportRefused, match="10 extra"):
        inspect_path(tiny_llama)


def test_garbage_header_is_refused(tiny_llama: Path) -> None:
    body = b"not json at all"
    (tiny_llama / "model.safetensors").write_bytes(struct.pack("<Q", len(body)) + body)
    with pytest.raises(ImportRefused, match="not a valid safetensors file: header is not JSON"):
        inspect_path(tiny_llama)


def test_config_less_directory_is_refused(config_less: Path) -> None:
    with pytest.raises(
        ImportRefused, match=r"not an HF model directory: config\.json missing"
    ) as info:
        inspect_path(config_less)
    assert info.value.hint is not None and ".gguf" in info.value.hint


def test_malformed_config_is_refused(tiny_llama: Path) -> None:
    (tiny_llama / "config.json").write_text("{not json")
    with pytest.raises(ImportRefused, match="is not valid JSON"):
        inspect_path(tiny_llama)


def test_directory_without_weights_is_refused(tiny_llama: Path) -> None:
    (tiny_llama / "model.safetensors").unlink()
    with pytest.raises(ImportRefused, match="no weights"):
        inspect_path(tiny_llama)


def test_pickle_only_is_refused_without_allow_pickle(pickle_only: Path) -> None:
    with pytest.raises(ImportRefused, match=r"only pickle weights \(pytorch_model\.bin\)") as info:
        inspect_path(pickle_only)
    assert info.value.hint is not None and "--allow-pickle" in info.value.hint


def test_pickle_with_allow_pickle_counts_from_shapes(pickle_only: Path) -> None:
    info = inspect_path(pickle_only, allow_pickle=True)
    assert info.param_count == LLAMA_PARAMS
    assert info.dtype == "float16"
    assert info.weight_files == ["pytorch_model.bin"]


def test_malicious_pickle_never_runs(tmp_path: Path, pickle_only: Path) -> None:
    import torch

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    torch.save({"w": torch.zeros(2), "evil": Evil()}, pickle_only / "pytorch_model.bin")
    with pytest.raises(
        ImportRefused, match=r"cannot read the pickle weights in pytorch_model\.bin"
    ):
        inspect_path(pickle_only, allow_pickle=True)
    assert not marker.exists()


def test_truncated_pickle_is_refused(pickle_only: Path) -> None:
    f = pickle_only / "pytorch_model.bin"
    os.truncate(f, f.stat().st_size // 2)
    with pytest.raises(ImportRefused, match="cannot read the pickle weights"):
        inspect_path(pickle_only, allow_pickle=True)


def test_pickle_next_to_safetensors_is_left_out(tiny_llama: Path, pickle_only: Path) -> None:
    shutil.copy(pickle_only / "pytorch_model.bin", tiny_llama / "pytorch_model.bin")
    info = inspect_path(tiny_llama)
    assert info.skipped == ["pytorch_model.bin"]
    assert "pytorch_model.bin" not in info.files
    assert info.param_count == LLAMA_PARAMS


def test_sentence_transformers_layout_is_embedding(tiny_bert: Path) -> None:
    info = inspect_path(tiny_bert)
    assert info.task == "embedding"
    assert info.architecture == "bert"
    assert info.param_count == 80
    assert info.num_kv_heads == 2  # defaults to the head count
    assert "1_Pooling/config.json" in info.files


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            {"model_type": "gpt2", "n_layer": 12, "n_embd": 768, "n_head": 12, "n_positions": 1024},
            (12, 768, 12, 12, 1024),
        ),
        (
            {
                "model_type": "mixtral",
                "num_hidden_layers": 32,
                "hidden_size": 4096,
                "num_attention_heads": 32,
                "num_key_value_heads": 8,
                "max_position_embeddings": 32768,
            },
            (32, 4096, 32, 8, 32768),
        ),
        (
            {"model_type": "falcon", "num_hidden_layers": 32, "hidden_size": 4544,
             "num_attention_heads": 71, "multi_query": True},
            (32, 4544, 71, 1, None),
        ),
        (
            {"model_type": "llava", "text_config": {"num_hidden_layers": 2, "hidden_size": 8,
             "num_attention_heads": 2, "max_position_embeddings": 64}},
            (2, 8, 2, 2, 64),
        ),
    ],
)  # fmt: skip
def test_config_key_mapping(config: dict[str, object], expected: tuple[object, ...]) -> None:
    f = config_facts(config)
    got = (f["num_layers"], f["hidden_size"], f["num_heads"], f["num_kv_heads"])
    assert (*got, f["context_length"]) == expected
    assert f["architecture"] == config["model_type"]


def test_gguf_facts(tiny_gguf: Path) -> None:
    info = inspect_path(tiny_gguf)
    assert info.format == "gguf"
    assert info.task == "chat"
    assert info.architecture == "llama"
    assert info.param_count == LLAMA_PARAMS
    assert (info.num_layers, info.hidden_size, info.num_heads, info.num_kv_heads) == (
        LAYERS,
        HIDDEN,
        HEADS,
        KV_HEADS,
    )
    assert info.context_length == CTX
    assert info.dtype == "F16"
    assert info.files == info.weight_files == ["Tiny-Llama-F16.gguf"]
    assert info.bytes_on_disk == tiny_gguf.stat().st_size


def test_gguf_without_file_type_uses_dominant_tensor_type(tmp_path: Path) -> None:
    info = inspect_path(write_gguf(tmp_path / "x.gguf", file_type=None))
    assert info.dtype == "F16"


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_truncated_gguf_names_expected_and_actual_size(tiny_gguf: Path, keep: float) -> None:
    size = tiny_gguf.stat().st_size
    cut = int(size * keep)
    os.truncate(tiny_gguf, cut)
    with pytest.raises(ImportRefused) as info:
        inspect_path(tiny_gguf)
    assert (
        str(info.value) == f"Tiny-Llama-F16.gguf is truncated: expected {size} bytes, found {cut}"
    )


def test_gguf_cut_inside_its_header(tiny_gguf: Path) -> None:
    os.truncate(tiny_gguf, 40)
    with pytest.raises(ImportRefused, match="header ends early at byte 40"):
        inspect_path(tiny_gguf)


def test_not_a_gguf(tmp_path: Path) -> None:
    f = tmp_path / "fake.gguf"
    f.write_bytes(b"PK\x03\x04 not gguf")
    with pytest.raises(ImportRefused, match="not a GGUF file"):
        inspect_path(f)


@pytest.mark.parametrize(
    ("name", "match"),
    [("model.safetensors", "directory holding it"), ("model.pt", "allow-pickle"), ("x.txt", "")],
)
def test_single_non_gguf_files_are_refused(tmp_path: Path, name: str, match: str) -> None:
    f = tmp_path / name
    f.write_bytes(b"\0" * 16)
    with pytest.raises(ImportRefused, match="not a directory or a GGUF file") as info:
        inspect_path(f)
    assert info.value.hint is not None and match in info.value.hint


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ImportRefused, match="does not exist"):
        inspect_path(tmp_path / "nope")
