"""The GGUF export, checked with the ``gguf`` reader and plain numpy (no llama.cpp needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from zhisuan.demo import tiny_chat_dir, tiny_chat_gguf
from zhisuan.demo._gguf_export import permute_for_llama_cpp


def _rope_half_split(x: np.ndarray, pos: int, base: float = 10000.0) -> np.ndarray:
    """Hugging Face Llama RoPE: dimension i pairs with i + d/2. x: (d,)"""
    d = x.shape[0]
    theta = pos * base ** (-np.arange(0, d, 2) / d)  # (d/2,)
    cos, sin = np.cos(theta), np.sin(theta)
    a, b = x[: d // 2], x[d // 2 :]
    return np.concatenate([a * cos - b * sin, b * cos + a * sin])


def _rope_interleaved(x: np.ndarray, pos: int, base: float = 10000.0) -> np.ndarray:
    """llama.cpp LLAMA RoPE: dimension 2i pairs with 2i + 1. x: (d,)"""
    d = x.shape[0]
    theta = pos * base ** (-np.arange(0, d, 2) / d)
    cos, sin = np.cos(theta), np.sin(theta)
    a, b = x[0::2], x[1::2]
    out = np.empty_like(x)
    out[0::2], out[1::2] = a * cos - b * sin, b * cos + a * sin
    return out


def test_permutation_turns_half_split_rope_into_interleaved_rope() -> None:
    rng = np.random.default_rng(0)
    n_heads, head_dim, hidden = 2, 8, 16
    w = rng.standard_normal((n_heads * head_dim, hidden))
    x = rng.standard_normal(hidden)
    hf = (w @ x).reshape(n_heads, head_dim)
    cpp = (permute_for_llama_cpp(w, n_heads) @ x).reshape(n_heads, head_dim)
    for h in range(n_heads):
        expected = permute_for_llama_cpp(_rope_half_split(hf[h], pos=5)[:, None], 1)[:, 0]
        np.testing.assert_allclose(_rope_interleaved(cpp[h], pos=5), expected, atol=1e-12)


def test_shipped_gguf_metadata_and_tensors() -> None:
    gguf = pytest.importorskip("gguf")
    config = json.loads((tiny_chat_dir() / "config.json").read_text())
    reader = gguf.GGUFReader(str(tiny_chat_gguf()))

    def field(key: str) -> object:
        return reader.fields[key].contents()

    assert field("general.architecture") == "llama"
    assert field("llama.block_count") == config["num_hidden_layers"]
    assert field("llama.attention.head_count") == config["num_attention_heads"]
    assert field("llama.attention.head_count_kv") == config["num_key_value_heads"]
    assert field("tokenizer.ggml.model") == "gpt2"
    tokens = field("tokenizer.ggml.tokens")
    assert isinstance(tokens, list)
    assert tokens[int(field("tokenizer.ggml.eos_token_id"))] == "<|end|>"  # type: ignore[call-overload]
    assert "<|assistant|>" in str(field("tokenizer.chat_template"))
    names = {t.name for t in reader.tensors}
    n = config["num_hidden_layers"]
    assert {"token_embd.weight", "output_norm.weight", f"blk.{n - 1}.ffn_down.weight"} <= names
