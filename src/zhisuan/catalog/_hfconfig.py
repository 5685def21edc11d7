"""Build a :class:`ModelArch` from a Hugging Face ``config.json``.

Understands the key spellings of llama, mistral, mixtral, qwen2, qwen2_moe, deepseek_v2/v3,
chatglm (THUDM), gpt2, opt, bloom, gpt_neox and falcon-style configs. Parameter counts are then
computed from the architecture, never read from the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from zhisuan.catalog._types import MLA, ModelArch, MoE
from zhisuan.errors import InvalidParameter


def _first(cfg: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for key in keys:
        if cfg.get(key) is not None:
            return cfg[key]
    return default


def model_from_hf_config(path: Path, *, name: str | None = None) -> ModelArch:
    """Parse an HF ``config.json`` (or a directory holding one) into a :class:`ModelArch`.

    Args:
        path: the file, or a model directory containing ``config.json``.
        name: id to give the model (default: the directory name).

    Returns:
        The architecture, with ``origin`` set to the file path.

    Raises:
        InvalidParameter: the file is missing, not JSON, or lacks the shape keys.
    """
    file = path / "config.json" if path.is_dir() else path
    try:
        cfg = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidParameter(f"cannot read model config {file}: {exc}", param="model") from exc
    if not isinstance(cfg, dict):
        raise InvalidParameter(f"{file} is not a JSON object", param="model")
    return model_from_hf_dict(cfg, name=name or file.parent.name or "model", origin=str(file))


def model_from_hf_dict(cfg: dict[str, Any], *, name: str, origin: str = "config") -> ModelArch:
    """Build a :class:`ModelArch` from an already-parsed HF config dict.

    Args:
        cfg: the config mapping.
        name: id for the model.
        origin: where it came from (shown in listings).

    Returns:
        The architecture.

    Raises:
        InvalidParameter: a required shape key is missing.
    """
    model_type = str(cfg.get("model_type", "")).lower()
    hidden = _first(cfg, "hidden_size", "n_embd", "d_model")
    layers = _first(cfg, "num_hidden_layers", "n_layer", "num_layers")
    heads = _first(cfg, "num_attention_heads", "n_head", "num_heads")
    vocab = _first(cfg, "vocab_size", "padded_vocab_size", default=32000)
    if not (hidden and layers and heads):
        raise InvalidParameter(
            f"config from {origin} lacks hidden_size/num_hidden_layers/num_attention_heads "
            f"(model_type={model_type or '?'})",
            param="model",
        )
    hidden, layers, heads = int(hidden), int(layers), int(heads)
    kv_heads = _first(cfg, "num_key_value_heads", "multi_query_group_num", "n_head_kv")
    if cfg.get("multi_query_attention") is False:
        kv_heads = None
    if kv_heads is None and cfg.get("multi_query"):
        kv_heads = 1
    head_dim = int(_first(cfg, "head_dim", "kv_channels", default=hidden // heads))
    plain = model_type in {"gpt2", "opt", "bloom", "gpt_neox", "gptj", "falcon", "gpt_bigcode"}
    if model_type == "chatglm":
        plain = "inner_hidden_size" in cfg  # ChatGLM-6B v1: GELU MLP; v2+ use SwiGLU
    ffn = _first(
        cfg,
        "moe_intermediate_size",
        "intermediate_size",
        "ffn_hidden_size",
        "inner_hidden_size",
        "n_inner",
        "ffn_dim",
        default=None,
    )
    if ffn is None:
        ffn = 4 * hidden
    moe: MoE | None = None
    experts = _first(cfg, "n_routed_experts", "num_local_experts", "num_experts")
    if experts:
        top_k = int(_first(cfg, "num_experts_per_tok", "num_experts_per_token", default=2))
        shared = int(_first(cfg, "n_shared_experts", default=0) or 0)
        dense_layers = int(_first(cfg, "first_k_dense_replace", default=0) or 0)
        dense_ffn = int(_first(cfg, "intermediate_size", default=ffn) or ffn)
        if model_type in {"mixtral"}:
            ffn = int(_first(cfg, "intermediate_size", default=ffn))
        moe = MoE(int(experts), top_k, shared, dense_layers, dense_ffn)
    mla: MLA | None = None
    if cfg.get("kv_lora_rank"):
        mla = MLA(
            kv_lora_rank=int(cfg["kv_lora_rank"]),
            qk_rope_dim=int(cfg.get("qk_rope_head_dim", 64)),
            qk_nope_dim=int(cfg.get("qk_nope_head_dim", 128)),
            v_head_dim=int(cfg.get("v_head_dim", 128)),
            q_lora_rank=int(cfg.get("q_lora_rank") or 0),
        )
    seq = int(_first(cfg, "max_position_embeddings", "n_positions", "seq_length", default=4096))
    learned = model_type in {"gpt2", "opt", "gpt_bigcode"}
    bias = model_type in {"gpt2", "opt", "bloom", "gpt_neox", "gpt_bigcode"} or bool(
        cfg.get("mlp_bias")
    )
    qkv_bias = bool(cfg.get("attention_bias") or cfg.get("add_qkv_bias")) or model_type in {
        "qwen2",
        "qwen2_moe",
    }
    return ModelArch(
        id=name,
        name=name,
        family=model_type or "hf",
        layers=layers,
        hidden=hidden,
        heads=heads,
        kv_heads=int(kv_heads) if kv_heads else heads,
        head_dim=head_dim,
        ffn=int(ffn),
        vocab=int(vocab),
        seq_len=min(seq, 8192),
        max_context=seq,
        gated_mlp=not plain,
        tied_embeddings=bool(cfg.get("tie_word_embeddings", model_type != "chatglm")),
        learned_pos=learned,
        bias=bias,
        qkv_bias=qkv_bias and not bias,
        moe=moe,
        mla=mla,
        source=f"HF config.json ({origin})",
        confidence="high: computed from the model's own config",
        origin=origin,
    )
