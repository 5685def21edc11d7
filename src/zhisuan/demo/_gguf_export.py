"""Export a Hugging Face Llama checkpoint with a byte-level BPE tokenizer to GGUF.

This is a small, self-contained converter for the demo model ``zhisuan-tiny-chat``; it is not a
general replacement for llama.cpp's ``convert_hf_to_gguf.py``. It supports exactly what the demo
needs: ``LlamaForCausalLM`` (GQA allowed, tied or untied output embedding, default RoPE) with a
``tokenizers`` byte-level BPE ``tokenizer.json``. Matrices are written as F16 and norm vectors
as F32, the layout llama.cpp's converter produces for ``--outtype f16``.

The one subtle step is the Q/K row permutation. Hugging Face's Llama applies RoPE with
``rotate_half``: within each head, dimension ``i`` is rotated together with ``i + head_dim/2``.
llama.cpp's ``LLM_ARCH_LLAMA`` uses the original interleaved (GPT-J) form, where dimension
``2i`` is rotated with ``2i + 1``. Reordering the output rows of ``q_proj`` and ``k_proj`` per
head, from ``[half0 | half1]`` to ``[h0[0], h1[0], h0[1], h1[1], ...]``, makes the two agree.
The attention scores are unchanged because Q and K are permuted the same way.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.floating[Any]]

# Hugging Face tensor name (inside ``model.layers.{i}.``) -> llama.cpp name (inside ``blk.{i}.``).
_LAYER_TENSORS = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_GLOBAL_TENSORS = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


class GGUFExportError(Exception):
    """The checkpoint uses a feature this small exporter does not handle."""


def permute_for_llama_cpp(weight: FloatArray, n_heads: int) -> FloatArray:
    """Reorder the rows of a q_proj/k_proj weight from HF's half-split RoPE to interleaved RoPE.

    Args:
        weight: ``(n_heads * head_dim, hidden)`` projection weight in Hugging Face layout.
        n_heads: heads in this projection (``num_key_value_heads`` for ``k_proj``).

    Returns:
        An array of the same shape whose rows, within each head, go
        ``0, head_dim/2, 1, head_dim/2 + 1, ...``.
    """
    rows = weight.shape[0]
    head_dim = rows // n_heads
    # (n_heads, 2 halves, head_dim/2, hidden) -> swap halves with positions -> interleaved pairs
    return (
        weight.reshape(n_heads, 2, head_dim // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _hf_to_gguf_name(name: str) -> str:
    if name in _GLOBAL_TENSORS:
        return _GLOBAL_TENSORS[name]
    parts = name.split(".", 3)  # ["model", "layers", "{i}", rest]
    if len(parts) == 4 and parts[:2] == ["model", "layers"] and parts[3] in _LAYER_TENSORS:
        return f"blk.{parts[2]}.{_LAYER_TENSORS[parts[3]]}"
    raise GGUFExportError(f"no llama.cpp name for tensor {name!r}")


def _load_tensors(hf_dir: Path) -> dict[str, FloatArray]:
    """Read every safetensors shard as float32 numpy arrays (through torch, which reads bf16)."""
    import torch
    from safetensors.torch import load_file

    files = sorted(hf_dir.glob("*.safetensors"))
    if not files:
        raise GGUFExportError(f"no *.safetensors file in {hf_dir}")
    tensors: dict[str, FloatArray] = {}
    for file in files:
        for name, tensor in load_file(str(file)).items():
            tensors[name] = tensor.to(torch.float32).numpy()
    return tensors


def _read_tokenizer(hf_dir: Path) -> tuple[list[str], list[int], list[str], dict[str, Any]]:
    """Return (tokens by id, token types, merges as "a b", tokenizer_config) of a BPE tokenizer."""
    import gguf

    tok = json.loads((hf_dir / "tokenizer.json").read_text(encoding="utf-8"))
    model = tok["model"]
    if model.get("type") != "BPE":
        raise GGUFExportError(f"only BPE tokenizers are supported, got {model.get('type')!r}")
    by_id: dict[int, str] = {int(i): t for t, i in model["vocab"].items()}
    control: set[int] = set()
    for added in tok.get("added_tokens", []):
        by_id[int(added["id"])] = added["content"]
        if added.get("special", False):
            control.add(int(added["id"]))
    if sorted(by_id) != list(range(len(by_id))):
        raise GGUFExportError("token ids are not contiguous from 0")
    tokens = [by_id[i] for i in range(len(by_id))]
    normal, ctrl = int(gguf.TokenType.NORMAL), int(gguf.TokenType.CONTROL)
    types = [ctrl if i in control else normal for i in range(len(tokens))]
    # tokenizers >= 0.20 writes merges as [a, b] pairs, older versions as "a b" strings.
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    config_path = hf_dir / "tokenizer_config.json"
    config: dict[str, Any] = (
        json.loads(config_path.read_text(encoding="utf-8")) if config_path.exists() else {}
    )
    template_path = hf_dir / "chat_template.jinja"
    if "chat_template" not in config and template_path.exists():
        config["chat_template"] = template_path.read_text(encoding="utf-8")
    return tokens, types, merges, config


def _rope_theta(config: dict[str, Any]) -> float:
    # transformers 5 moved rope_theta into rope_parameters; 4.x keeps it at the top level.
    params = config.get("rope_parameters") or {}
    if params.get("rope_type", "default") != "default":
        raise GGUFExportError(f"RoPE scaling {params['rope_type']!r} is not supported")
    if config.get("rope_scaling"):
        raise GGUFExportError("RoPE scaling is not supported")
    return float(params.get("rope_theta", config.get("rope_theta", 10000.0)))


def export_llama_to_gguf(hf_dir: Path, out: Path) -> None:
    """Write a GGUF file (F16 matrices, F32 norms) for a Hugging Face Llama checkpoint.

    Args:
        hf_dir: directory with ``config.json``, ``*.safetensors``, ``tokenizer.json`` (byte-level
            BPE) and ``tokenizer_config.json`` (special tokens and ``chat_template``).
        out: path of the ``.gguf`` file to write; its parent folder must exist.

    Raises:
        GGUFExportError: the checkpoint is not a plain Llama model with a BPE tokenizer.
    """
    import gguf

    config: dict[str, Any] = json.loads((hf_dir / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") != "llama":
        raise GGUFExportError(f"expected model_type 'llama', got {config.get('model_type')!r}")
    n_head = int(config["num_attention_heads"])
    n_head_kv = int(config.get("num_key_value_heads") or n_head)
    hidden = int(config["hidden_size"])
    head_dim = int(config.get("head_dim") or hidden // n_head)
    if head_dim * n_head != hidden:
        raise GGUFExportError("head_dim * num_attention_heads must equal hidden_size")

    tokens, types, merges, tok_config = _read_tokenizer(hf_dir)
    ids = {t: i for i, t in enumerate(tokens)}

    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_name(hf_dir.name)
    writer.add_file_type(int(gguf.LlamaFileType.MOSTLY_F16))
    writer.add_vocab_size(len(tokens))
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(hidden)
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))

    writer.add_tokenizer_model("gpt2")  # llama.cpp's name for byte-level BPE
    writer.add_tokenizer_pre("gpt-2")  # the GPT-2 split regex, as tokenizers' ByteLevel uses
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for key, add in (
        ("bos_token", writer.add_bos_token_id),
        ("eos_token", writer.add_eos_token_id),
        ("pad_token", writer.add_pad_token_id),
    ):
        value = tok_config.get(key)
        text = value.get("content") if isinstance(value, dict) else value
        if text is not None:
            add(ids[text])
    writer.add_add_bos_token(bool(tok_config.get("add_bos_token", True)))
    writer.add_add_eos_token(False)
    if tok_config.get("chat_template"):
        writer.add_chat_template(tok_config["chat_template"])

    for name, array in _load_tensors(hf_dir).items():
        if name.endswith("rotary_emb.inv_freq"):
            continue  # recomputed by llama.cpp from rope_freq_base
        if name.endswith("self_attn.q_proj.weight"):
            array = permute_for_llama_cpp(array, n_head)
        elif name.endswith("self_attn.k_proj.weight"):
            array = permute_for_llama_cpp(array, n_head_kv)
        # llama.cpp expects 1-D tensors (norms) in F32; matrices go to F16.
        data = array.astype(np.float32 if array.ndim == 1 else np.float16)
        writer.add_tensor(_hf_to_gguf_name(name), data)
    # A tied lm_head is absent from the checkpoint; llama.cpp then reuses token_embd.weight.

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    logger.info("wrote %s (%d bytes)", out, out.stat().st_size)
