"""Training and inference FLOP counts.

Training, per token (Kaplan et al. 2020; Chowdhery et al. 2022 App. B)::

    model FLOPs  = 6 * N_active + 12 * layers * seq * attn_dim
    6·N·D        = the headline estimate (GPT-3: 6 x 174.6e9 x 300e9 = 3.14e23)

The attention term counts QK^T and AV in forward (4·L·s·d) and backward (2x), without halving
for the causal mask, as PaLM's MFU does. The input embedding of an untied model does no matmul,
so it is left out of ``N`` in the model-FLOPs count (it stays in the headline 6·N·D).
Full activation recompute replays the forward pass: +2·N + 4·L·s·d per token of hardware FLOPs.
"""

from __future__ import annotations

from zhisuan.catalog import ModelArch

PF_DAY = 1e15 * 86400.0  # FLOPs in one petaFLOP/s-day


def matmul_params(model: ModelArch) -> float:
    """Active parameters that take part in a matmul per token (excludes the input lookup)."""
    lookup = model.vocab * model.hidden if not model.tied_embeddings else 0
    if model.learned_pos:
        lookup += model.seq_len * model.hidden
    return float(model.active_params - lookup)


def train_flops_per_token(model: ModelArch, seq: int) -> float:
    """Model FLOPs per trained token (forward + backward), incl. the attention term.

    Args:
        model: architecture.
        seq: training sequence length.

    Returns:
        FLOPs per token.
    """
    return 6.0 * matmul_params(model) + 12.0 * model.layers * seq * model.attn_dim


def recompute_flops_per_token(model: ModelArch, seq: int, recompute: str) -> float:
    """Extra hardware FLOPs per token spent on activation recomputation.

    Args:
        model: architecture.
        seq: sequence length.
        recompute: ``none``, ``selective`` (attention core only) or ``full``.

    Returns:
        Extra FLOPs per token (0 for ``none``).
    """
    attn = 4.0 * model.layers * seq * model.attn_dim
    if recompute == "full":
        lookup = model.vocab * model.hidden  # the logit layer is not replayed
        return 2.0 * (matmul_params(model) - lookup) + attn
    if recompute == "selective":
        return attn
    return 0.0


def flops_6nd(model: ModelArch, tokens: float) -> float:
    """The headline 6·N·D estimate with N = active parameters.

    Args:
        model: architecture.
        tokens: training tokens D.

    Returns:
        FLOPs.
    """
    return 6.0 * model.active_params * tokens


def prefill_flops(model: ModelArch, prompt_tokens: int) -> float:
    """Forward FLOPs to prefill one prompt (causal attention: half the score matrix).

    Args:
        model: architecture.
        prompt_tokens: prompt length.

    Returns:
        FLOPs.
    """
    p = float(prompt_tokens)
    return 2.0 * matmul_params(model) * p + 2.0 * model.layers * p * p * model.attn_dim


def decode_flops_per_token(model: ModelArch, context: float) -> float:
    """Forward FLOPs for one generated token at a given context length.

    Args:
        model: architecture.
        context: tokens already in the KV cache.

    Returns:
        FLOPs.
    """
    return 2.0 * matmul_params(model) + 4.0 * model.layers * context * model.attn_dim
