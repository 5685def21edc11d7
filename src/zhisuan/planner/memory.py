"""Memory per device for training and for serving.

Training (mixed-precision Adam, Rajbhandari et al. 2020): 2 bytes BF16 weights + 2 bytes
gradients + 12 bytes FP32 master weights and Adam moments = 16 bytes per parameter, divided by
TP x PP and, per ZeRO stage, by DP: stage 1 shards the 12 optimizer bytes, stage 2 also the
gradients, stage 3 everything. MoE experts are further split over expert parallelism
(``ep = min(experts, dp)``).

Activations per layer per micro-batch (Korthikanti et al. 2022, Table 2, with sequence
parallelism so every term divides by TP)::

    none       s·b·h·(34 + 5·a·s/h) / t     attention scores materialised
    selective  s·b·h·34 / t                 attention core recomputed (FlashAttention-style)
    full       s·b·h·2 / t                  only the layer input kept, plus one layer's working set

1F1B pipelining keeps ``min(pp, micro-batches)`` micro-batches in flight on the first stage, so
that stage holds activations for ``layers`` layers' worth in total. FP32 logits add
``4·s·b·V / t``.
"""

from __future__ import annotations

from zhisuan.catalog import Accelerator, ModelArch
from zhisuan.planner._common import GB, MEMORY_RESERVE_GB, USABLE_MEMORY_FRACTION, Layout


def usable_gb(device: Accelerator) -> float:
    """Memory a job can count on per device (GB)."""
    return device.memory_gb * USABLE_MEMORY_FRACTION - MEMORY_RESERVE_GB


def _expert_params(model: ModelArch) -> float:
    if model.moe is None:
        return 0.0
    mats = 3 if model.gated_mlp else 2
    moe_layers = model.layers - model.moe.dense_layers
    return float(moe_layers * model.moe.experts * mats * model.hidden * model.ffn)


def state_bytes_per_device(model: ModelArch, layout: Layout) -> float:
    """Weights + gradients + optimizer bytes on one device.

    Args:
        model: architecture.
        layout: parallel layout.

    Returns:
        Bytes.
    """
    dp = max(layout.dp, 1.0)
    per_param = {0: 16.0, 1: 4.0 + 12.0 / dp, 2: 2.0 + 14.0 / dp, 3: 16.0 / dp}[layout.zero]
    experts = _expert_params(model)
    ep = min(float(model.moe.experts), dp) if model.moe is not None else 1.0
    params = (model.params - experts) + experts / ep
    return params * per_param / (layout.tp * layout.pp)


def activation_bytes_per_device(
    model: ModelArch, layout: Layout, seq: int, microbatches: float
) -> float:
    """Activation bytes on the most loaded (first) pipeline stage.

    Args:
        model: architecture.
        layout: parallel layout.
        seq: sequence length.
        microbatches: micro-batches per step per replica.

    Returns:
        Bytes.
    """
    s, b, h, t = float(seq), float(layout.micro_batch), float(model.hidden), float(layout.tp)
    sbh = s * b * h
    per_layer_full = sbh * (34.0 + 5.0 * model.heads * s / h) / t
    if layout.recompute == "full":
        per_layer = 2.0 * sbh / t
        working = sbh * 34.0 / t  # one layer replayed at a time
    elif layout.recompute == "selective":
        per_layer, working = 34.0 * sbh / t, 0.0
    else:
        per_layer, working = per_layer_full, 0.0
    in_flight = min(float(layout.pp), max(microbatches, 1.0))
    layers_per_stage = model.layers / layout.pp
    logits = 4.0 * s * b * model.vocab / t
    return layers_per_stage * in_flight * per_layer + working + logits


def train_memory_gb(model: ModelArch, layout: Layout, seq: int, microbatches: float) -> float:
    """Total training memory per device in GB (state + activations).

    Args:
        model: architecture.
        layout: parallel layout.
        seq: sequence length.
        microbatches: micro-batches per step per replica.

    Returns:
        GB.
    """
    total = state_bytes_per_device(model, layout)
    total += activation_bytes_per_device(model, layout, seq, microbatches)
    return total / GB


def min_devices_zero3(model: ModelArch, device: Accelerator, seq: int) -> int:
    """Fewest devices that hold the model with ZeRO-3, full recompute and TP up to a node.

    Args:
        model: architecture.
        device: accelerator.
        seq: sequence length.

    Returns:
        Device count (0 when even one sequence's activations do not fit).
    """
    tp = min(device.devices_per_node, 8)
    act = activation_bytes_per_device(model, Layout(tp=tp, recompute="full"), seq, 1.0) / GB
    room = usable_gb(device) - act
    if room <= 0:
        return 0
    return max(1, int(-(-(model.params * 16.0 / GB) // room)))


def weights_gb(model: ModelArch, bytes_per_param: float) -> float:
    """Serving weight memory in GB at a given precision (all experts resident).

    Args:
        model: architecture.
        bytes_per_param: e.g. 2 for BF16, 0.5156 for INT4 with group-128 scales.

    Returns:
        GB.
    """
    return model.params * bytes_per_param / GB


def kv_cache_gb_per_seq(model: ModelArch, tokens: int, kv_bytes: float) -> float:
    """KV cache of one sequence in GB.

    Args:
        model: architecture.
        tokens: prompt + output tokens.
        kv_bytes: bytes per cached element (2 for FP16/BF16, 1 for FP8).

    Returns:
        GB.
    """
    return model.kv_bytes_per_token(kv_bytes) * tokens / GB
