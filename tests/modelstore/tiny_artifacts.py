"""Tiny model artifacts with known shapes, so parameter counts are checked exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np

VOCAB, HIDDEN, LAYERS, HEADS, KV_HEADS, INTER, CTX = 32, 16, 2, 4, 2, 32, 128
HEAD_DIM = HIDDEN // HEADS


def llama_tensors() -> dict[str, np.ndarray]:
    """Llama weights: 2-D matrices in float16, norms in float32 (so float16 dominates)."""
    f16, f32 = np.float16, np.float32
    kv = KV_HEADS * HEAD_DIM
    t: dict[str, np.ndarray] = {"model.embed_tokens.weight": np.zeros((VOCAB, HIDDEN), f16)}
    for i in range(LAYERS):
        p = f"model.layers.{i}"
        t[f"{p}.self_attn.q_proj.weight"] = np.zeros((HIDDEN, HIDDEN), f16)
        t[f"{p}.self_attn.k_proj.weight"] = np.zeros((kv, HIDDEN), f16)
        t[f"{p}.self_attn.v_proj.weight"] = np.zeros((kv, HIDDEN), f16)
        t[f"{p}.self_attn.o_proj.weight"] = np.zeros((HIDDEN, HIDDEN), f16)
        t[f"{p}.mlp.gate_proj.weight"] = np.zeros((INTER, HIDDEN), f16)
        t[f"{p}.mlp.up_proj.weight"] = np.zeros((INTER, HIDDEN), f16)
        t[f"{p}.mlp.down_proj.weight"] = np.zeros((HIDDEN, INTER), f16)
        t[f"{p}.input_layernorm.weight"] = np.ones((HIDDEN,), f32)
        t[f"{p}.post_attention_layernorm.weight"] = np.ones((HIDDEN,), f32)
    t["model.norm.weight"] = np.ones((HIDDEN,), f32)
    t["lm_head.weight"] = np.zeros((VOCAB, HIDDEN), f16)
    return t


# Hand-computed: embed 512 + 2 x (q 256 + k 128 + v 128 + o 256 + 3 x mlp 512 + norms 32)
# + final norm 16 + lm_head 512.
LLAMA_PARAMS = 512 + LAYERS * (256 + 128 + 128 + 256 + 3 * 512 + 32) + 16 + 512
assert LLAMA_PARAMS == 5712
LLAMA_F16_PARAMS = LLAMA_PARAMS - (2 * LAYERS + 1) * HIDDEN


def llama_config() -> dict[str, object]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": VOCAB,
        "hidden_size": HIDDEN,
        "intermediate_size": INTER,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "max_position_embeddings": CTX,
        "torch_dtype": "float16",
    }


def write_gguf(path: Path, *, file_type: int | None = 1) -> Path:
    """A GGUF 'llama' with the same shapes as the HF fixture (F16 matrices, F32 norms)."""
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(LAYERS)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(INTER)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_context_length(CTX)
    if file_type is not None:
        w.add_file_type(file_type)
    for name, arr in llama_tensors().items():
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
