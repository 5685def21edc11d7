"""Catalog entry types: an accelerator and a model architecture.

Both are frozen dataclasses (cheap to build, hashable, fast attribute access in the planner's
hot loops). Units are in the field names or stated in the docstrings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

PRECISIONS = ("fp64", "fp32", "tf32", "fp16", "bf16", "fp8", "int8")


@dataclass(frozen=True)
class Price:
    """Indicative prices for one device, in ``currency``.

    Attributes:
        purchase: purchase price per device, or ``None`` when none is public.
        hourly: rental price per device-hour, or ``None``.
        currency: ISO code (``USD``, ``CNY``, ``EUR``).
        note: where the figure comes from; prices are always indicative.
    """

    purchase: float | None = None
    hourly: float | None = None
    currency: str = "USD"
    note: str = "indicative"


@dataclass(frozen=True)
class Accelerator:
    """One accelerator (or CPU socket) with its peak rates, memory, links, power and price.

    Peak rates are dense TFLOPS (TOPS for int8), ``None`` where the mode does not exist.
    ``interconnect_gbs`` is the vendor's aggregate scale-up figure (both directions, GB/s);
    ``network_gbs`` is scale-out bandwidth per device per direction (GB/s).
    """

    id: str
    name: str
    vendor: str
    kind: str
    memory_gb: float
    memory_bw_tbs: float
    interconnect_gbs: float
    network_gbs: float
    devices_per_node: int
    tdp_w: float
    source: str
    confidence: str
    fp64: float | None = None
    fp32: float | None = None
    tf32: float | None = None
    fp16: float | None = None
    bf16: float | None = None
    fp8: float | None = None
    int8: float | None = None
    avg_power_w: float | None = None
    server_power_w: float | None = None
    price: Price = field(default_factory=Price)
    aliases: tuple[str, ...] = ()
    origin: str = "builtin"

    def peak_tflops(self, precision: str = "bf16") -> float:
        """Dense peak for ``precision``, falling back to the nearest mode the chip has.

        A chip without BF16 runs mixed precision in FP16 (V100); without FP8 it runs FP8
        workloads at its 16-bit rate; a chip with neither falls back to FP32.

        Args:
            precision: one of fp64, fp32, tf32, fp16, bf16, fp8, int8, int4.

        Returns:
            TFLOPS (or TOPS), always > 0.
        """
        order = {
            "fp64": ("fp64", "fp32"),
            "fp32": ("fp32", "tf32"),
            "tf32": ("tf32", "fp32"),
            "fp16": ("fp16", "bf16", "fp32"),
            "bf16": ("bf16", "fp16", "fp32"),
            "fp8": ("fp8", "bf16", "fp16", "fp32"),
            "int8": ("int8", "fp16", "bf16", "fp32"),
            "int4": ("int8", "fp16", "bf16", "fp32"),
        }.get(precision, ("bf16", "fp16", "fp32"))
        for name in order:
            value = getattr(self, name)
            if value:
                return float(value)
        return float(self.fp64 or 1.0)

    @property
    def power_w(self) -> float:
        """Typical average power per device (W); TDP x 0.85 when the catalog has no figure."""
        return float(self.avg_power_w if self.avg_power_w else 0.85 * self.tdp_w)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        out: dict[str, Any] = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["aliases"] = list(self.aliases)
        out["price"] = {
            "purchase": self.price.purchase,
            "hourly": self.price.hourly,
            "currency": self.price.currency,
            "note": self.price.note,
        }
        return out


@dataclass(frozen=True)
class MoE:
    """Mixture-of-experts layout: routed experts, how many are active, shared experts."""

    experts: int
    top_k: int
    shared: int = 0
    dense_layers: int = 0
    dense_ffn: int = 0


@dataclass(frozen=True)
class MLA:
    """Multi-head latent attention (DeepSeek-V2/V3) ranks and head dimensions."""

    kv_lora_rank: int
    qk_rope_dim: int
    qk_nope_dim: int
    v_head_dim: int
    q_lora_rank: int = 0


@dataclass(frozen=True)
class ModelArch:
    """A decoder-only transformer architecture; parameter counts are computed from it.

    Attributes:
        layers, hidden, heads, kv_heads, head_dim: shape of the attention stack.
        ffn: MLP inner size (per expert for MoE).
        vocab: vocabulary size.
        seq_len: pre-training sequence length (training default).
        max_context: longest context when serving.
        gated_mlp: SwiGLU-style MLP with three matrices (else two).
        tied_embeddings: input and output embeddings shared.
        learned_pos: learned absolute position embeddings (GPT/OPT/BERT).
        bias: linear layers carry biases (GPT-2/3, OPT, BLOOM).
        qkv_bias: only the QKV projection has a bias (Qwen2, ChatGLM2+).
    """

    id: str
    name: str
    family: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    seq_len: int
    max_context: int
    source: str
    confidence: str
    gated_mlp: bool = True
    tied_embeddings: bool = False
    learned_pos: bool = False
    bias: bool = False
    qkv_bias: bool = False
    moe: MoE | None = None
    mla: MLA | None = None
    published_params_b: float | None = None
    published_active_b: float | None = None
    aliases: tuple[str, ...] = ()
    origin: str = "builtin"

    # ---- parameter counts -------------------------------------------------------------------

    def _attention_params(self) -> int:
        h = self.hidden
        if self.mla is not None:
            m = self.mla
            qk = m.qk_nope_dim + m.qk_rope_dim
            if m.q_lora_rank:
                q = h * m.q_lora_rank + m.q_lora_rank + m.q_lora_rank * self.heads * qk
            else:
                q = h * self.heads * qk
            kv = h * (m.kv_lora_rank + m.qk_rope_dim) + m.kv_lora_rank
            kv += m.kv_lora_rank * self.heads * (m.qk_nope_dim + m.v_head_dim)
            return q + kv + self.heads * m.v_head_dim * h
        q_out = self.heads * self.head_dim
        kv_out = self.kv_heads * self.head_dim
        params = h * q_out + 2 * h * kv_out + q_out * h
        if self.bias or self.qkv_bias:
            params += q_out + 2 * kv_out
        if self.bias:
            params += h
        return params

    def _mlp_params(self, ffn: int) -> int:
        mats = 3 if self.gated_mlp else 2
        params = mats * self.hidden * ffn
        if self.bias:
            params += (mats - 1) * ffn + self.hidden
        return params

    @cached_property
    def _counts(self) -> tuple[int, int, int]:
        """(total, active, embedding) parameter counts."""
        h = self.hidden
        norms = 2 * h * (2 if self.bias else 1)
        attn = self._attention_params() + norms
        total = active = self.layers * attn
        if self.moe is None:
            total += self.layers * self._mlp_params(self.ffn)
            active = total
        else:
            moe = self.moe
            dense = moe.dense_layers * self._mlp_params(moe.dense_ffn or self.ffn)
            moe_layers = self.layers - moe.dense_layers
            expert = self._mlp_params(self.ffn)
            router = h * moe.experts
            total += dense + moe_layers * ((moe.experts + moe.shared) * expert + router)
            active += dense + moe_layers * ((moe.top_k + moe.shared) * expert + router)
        embed = self.vocab * h * (1 if self.tied_embeddings else 2)
        if self.learned_pos:
            embed += self.seq_len * h
        embed += h  # final norm
        return total + embed, active + embed, embed

    @property
    def params(self) -> int:
        """Total parameters (all experts)."""
        return self._counts[0]

    @property
    def active_params(self) -> int:
        """Parameters used per token (routed top-k + shared experts for MoE)."""
        return self._counts[1]

    @property
    def embedding_params(self) -> int:
        """Embedding and output-head parameters."""
        return self._counts[2]

    @property
    def attn_dim(self) -> int:
        """Width of the attention context (heads x value head dim) for the attention FLOPs term."""
        if self.mla is not None:
            return self.heads * (self.mla.qk_nope_dim + self.mla.qk_rope_dim)
        return self.heads * self.head_dim

    def kv_bytes_per_token(self, bytes_per_elem: float = 2.0) -> float:
        """KV-cache bytes per token over all layers.

        MHA/GQA/MQA: 2 (K and V) x layers x kv_heads x head_dim. MLA caches the compressed
        latent plus the decoupled RoPE key: layers x (kv_lora_rank + qk_rope_dim).

        Args:
            bytes_per_elem: 2 for FP16/BF16 caches, 1 for FP8/INT8.

        Returns:
            Bytes per token.
        """
        if self.mla is not None:
            return self.layers * (self.mla.kv_lora_rank + self.mla.qk_rope_dim) * bytes_per_elem
        return 2.0 * self.layers * self.kv_heads * self.head_dim * bytes_per_elem

    @property
    def attention_kind(self) -> str:
        """``mla``, ``mha``, ``mqa`` or ``gqa``."""
        if self.mla is not None:
            return "mla"
        if self.kv_heads == self.heads:
            return "mha"
        return "mqa" if self.kv_heads == 1 else "gqa"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary including computed parameter counts."""
        return {
            "id": self.id,
            "name": self.name,
            "family": self.family,
            "params_b": round(self.params / 1e9, 3),
            "active_params_b": round(self.active_params / 1e9, 3),
            "published_params_b": self.published_params_b,
            "layers": self.layers,
            "hidden": self.hidden,
            "heads": self.heads,
            "kv_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "ffn": self.ffn,
            "vocab": self.vocab,
            "seq_len": self.seq_len,
            "max_context": self.max_context,
            "attention": self.attention_kind,
            "moe": None
            if self.moe is None
            else {"experts": self.moe.experts, "top_k": self.moe.top_k, "shared": self.moe.shared},
            "kv_bytes_per_token_fp16": self.kv_bytes_per_token(2.0),
            "source": self.source,
            "confidence": self.confidence,
            "origin": self.origin,
            "aliases": list(self.aliases),
        }
