"""Fixtures of the model store's tests: tiny HF Llama dirs (whole, sharded, truncated,
pickle-only, config-less), a sentence-transformers BERT dir, a GGUF file, and a store on each
database (SQLite file; PostgreSQL in a fresh schema when ZHISUAN_TEST_POSTGRES_URL is set)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from tiny_artifacts import llama_config, llama_tensors, write_gguf

from zhisuan.settings import Settings
from zhisuan.store import Store


def _write_common(d: Path, config: dict[str, object] | None) -> None:
    d.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (d / "config.json").write_text(json.dumps(config))
    (d / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "BPE"}}')
    (d / "tokenizer_config.json").write_text('{"bos_token": "<s>"}')


@pytest.fixture
def tiny_llama(tmp_path: Path) -> Path:
    from safetensors.numpy import save_file

    d = tmp_path / "Tiny-Llama"
    _write_common(d, llama_config())
    save_file(llama_tensors(), str(d / "model.safetensors"), metadata={"format": "pt"})
    return d


@pytest.fixture
def sharded_llama(tmp_path: Path) -> Path:
    from safetensors.numpy import save_file

    d = tmp_path / "sharded-llama"
    _write_common(d, llama_config())
    tensors = llama_tensors()
    names = sorted(tensors)
    half = len(names) // 2
    shards = {
        "model-00001-of-00002.safetensors": names[:half],
        "model-00002-of-00002.safetensors": names[half:],
    }
    weight_map = {}
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(d / shard))
        weight_map.update(dict.fromkeys(keys, shard))
    (d / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    return d


@pytest.fixture
def truncated_llama(tiny_llama: Path, tmp_path: Path) -> Path:
    d = tmp_path / "truncated-llama"
    shutil.copytree(tiny_llama, d)
    f = d / "model.safetensors"
    os.truncate(f, f.stat().st_size - 100)
    return d


@pytest.fixture
def pickle_only(tmp_path: Path) -> Path:
    import torch

    d = tmp_path / "pickle-llama"
    _write_common(d, llama_config())
    state = {k: torch.from_numpy(v.copy()) for k, v in llama_tensors().items()}
    torch.save(state, d / "pytorch_model.bin")
    return d


@pytest.fixture
def config_less(tmp_path: Path) -> Path:
    from safetensors.numpy import save_file

    d = tmp_path / "no-config"
    _write_common(d, None)
    save_file(llama_tensors(), str(d / "model.safetensors"))
    return d


@pytest.fixture
def tiny_bert(tmp_path: Path) -> Path:
    """A sentence-transformers layout around a tiny BertModel (an embedding model)."""
    from safetensors.numpy import save_file

    d = tmp_path / "tiny-minilm"
    _write_common(
        d,
        {
            "architectures": ["BertModel"],
            "model_type": "bert",
            "hidden_size": 8,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 64,
        },
    )
    save_file(
        {"embeddings.word_embeddings.weight": np.zeros((10, 8), np.float32)},
        str(d / "model.safetensors"),
    )
    (d / "modules.json").write_text("[]")
    (d / "1_Pooling").mkdir()
    (d / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    return d


@pytest.fixture
def tiny_gguf(tmp_path: Path) -> Path:
    return write_gguf(tmp_path / "Tiny-Llama-F16.gguf")


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(home=tmp_path / "home", database_url=db_url)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    with Store.open(settings.database_url) as s:
        yield s
