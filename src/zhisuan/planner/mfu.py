"""Steady-state utilisation: a step-time model with three fitted constants.

One training step on one device takes::

    T_step = T_compute + T_tp + T_bubble + T_dp

    T_compute = hardware FLOPs per device / (peak · u_k)
    u_k       = u_max · h / (h + c · peak / memory_bw)      kernel efficiency
    T_tp      = k · bytes of TP collectives / link bandwidth
    T_bubble  = (pp − 1) / microbatches · (T_compute + T_tp)           1F1B pipeline bubble
    T_dp      = max(0, 1.1 · T_allreduce − overlap · T_backward)       gradient all-reduce

``u_k`` is a roofline smoothing: matmuls of width ``h`` reach ``u_max`` of peak, and the
memory-bound work around them (norms, activations, softmax) costs time in proportion to the
chip's FLOP-to-byte ratio over ``h``. Tensor parallelism adds 4 all-reduces of ``s·b·h`` BF16
values per layer per micro-batch (6 with full recompute) over the scale-up link; the gradient
all-reduce is a hierarchical ring (inside the node over the scale-up link, across nodes over each
device's NIC), hidden behind up to ``overlap`` of the backward pass and reaching ~90% of the
link rate. ``k`` scales the nominal scale-up bandwidth to what the small, latency-bound,
non-overlapped TP collectives achieve.

HFU = hardware FLOPs / (peak · T_step); MFU = HFU · model FLOPs / hardware FLOPs.

``u_max``, ``c`` and ``k`` are fitted once by :mod:`zhisuan.planner.fit` on the calibration rows
of the published runs; :data:`FITTED` records the result (a test re-runs the fit and compares).
"""

from __future__ import annotations

from dataclasses import dataclass

from zhisuan.catalog import Accelerator, ModelArch
from zhisuan.planner._common import Layout
from zhisuan.planner.flops import recompute_flops_per_token, train_flops_per_token

#: Share of the backward pass behind which the gradient all-reduce can hide (bucketed DDP /
#: distributed optimizer). Fixed, not fitted.
DP_OVERLAP = 0.8
#: Nominal link bandwidth over what a large ring all-reduce achieves (NCCL bus bandwidth reaches
#: ~90% of the link rate for gradient-sized messages). Fixed, not fitted.
DP_DERATE = 1.1


@dataclass(frozen=True)
class MfuParams:
    """The fitted constants of the utilisation model."""

    u_max: float
    c_kernel: float
    k_comm: float


#: Result of ``python -m zhisuan.planner.fit`` on the calibration rows of
#: ``planner/data/published_runs.yaml`` (Megatron-LM 1.7B, 18.4B, 145.6B and 1T on A100).
#: tests/planner re-runs the fit and checks these values; do not edit by hand.
FITTED = MfuParams(u_max=0.658, c_kernel=7.5, k_comm=1.89)


@dataclass(frozen=True)
class StepEstimate:
    """One training step on one device, broken down (seconds), and the utilisation."""

    compute_s: float
    tp_s: float
    bubble_s: float
    dp_s: float
    step_s: float
    hfu: float
    mfu: float
    tokens_per_step: float
    model_flops_per_token: float
    hw_flops_per_token: float
    microbatches: float
    kernel_efficiency: float
    devices_used: float

    @property
    def tokens_per_device_s(self) -> float:
        """Training tokens per second per device."""
        return self.tokens_per_step / self.step_s / max(self.devices_used, 1.0)


def kernel_efficiency(model: ModelArch, device: Accelerator, peak: float, p: MfuParams) -> float:
    """``u_k``: the share of peak the transformer's kernels reach at this width.

    Args:
        model: architecture (its hidden size matters).
        device: accelerator (its FLOP-to-byte ratio matters).
        peak: peak FLOP/s used for training.
        p: fitted constants.

    Returns:
        A fraction in (0, 1).
    """
    ratio = peak / (device.memory_bw_tbs * 1e12)  # FLOP per byte
    h = float(model.hidden)
    return p.u_max * h / (h + p.c_kernel * ratio)


def step_estimate(
    model: ModelArch,
    device: Accelerator,
    layout: Layout,
    *,
    count: float,
    seq: int,
    batch_seqs: float,
    precision: str = "bf16",
    params: MfuParams | None = None,
) -> StepEstimate:
    """Estimate one steady-state training step.

    Args:
        model: architecture.
        device: accelerator.
        layout: parallel layout (``layout.dp`` is ignored; ``count`` decides it).
        count: devices in the job.
        seq: sequence length.
        batch_seqs: global batch in sequences.
        precision: training precision for the peak rate.
        params: constants; defaults to :data:`FITTED`.

    Returns:
        The step breakdown with HFU and MFU.
    """
    p = params or FITTED
    peak = device.peak_tflops(precision) * 1e12
    t, pp, b = layout.tp, layout.pp, float(layout.micro_batch)
    mp = t * pp
    # A fixed global batch cannot keep more replicas busy than it has micro-batches.
    dp = max(min(count / mp, batch_seqs / b), 1.0)
    used = dp * mp
    micro = batch_seqs / (dp * b)
    tokens = batch_seqs * seq
    model_fpt = train_flops_per_token(model, seq)
    hw_fpt = model_fpt + recompute_flops_per_token(model, seq, layout.recompute)
    u_k = kernel_efficiency(model, device, peak, p)
    hw_flops_dev = hw_fpt * tokens / used
    compute = hw_flops_dev / (peak * u_k)

    # Tensor-parallel activation all-reduces (reduce-scatter + all-gather with SP: same bytes).
    tp_s = 0.0
    if t > 1:
        n_coll = 6.0 if layout.recompute == "full" else 4.0
        msg = b * seq * model.hidden * 2.0
        vol = n_coll * (model.layers / pp) * micro * 2.0 * (t - 1) / t * msg
        link = device.interconnect_gbs / 2.0 if t <= device.devices_per_node else device.network_gbs
        tp_s = p.k_comm * vol / (link * 1e9)

    bubble = (pp - 1) / max(micro, 1.0) * (compute + tp_s)

    # Gradient all-reduce, hierarchical: inside the node, then one shard per device across nodes.
    dp_s = 0.0
    if dp > 1.0:
        grads = 2.0 * model.params / mp
        zero_factor = 1.5 if layout.zero == 3 else 1.0
        local = min(dp, max(1.0, float(device.devices_per_node // mp)))
        nodes = dp / local
        raw = 0.0
        if local > 1.0:
            raw += 2.0 * (local - 1.0) / local * grads / (device.interconnect_gbs / 2.0 * 1e9)
        if nodes > 1.0:
            raw += 2.0 * (nodes - 1.0) / nodes * grads / local / (device.network_gbs * 1e9)
        backward = compute * 2.0 / 3.0
        dp_s = max(0.0, DP_DERATE * zero_factor * raw - DP_OVERLAP * backward)

    step = compute + tp_s + bubble + dp_s
    hfu = hw_flops_dev / (peak * step)
    return StepEstimate(
        compute_s=compute,
        tp_s=tp_s,
        bubble_s=bubble,
        dp_s=dp_s,
        step_s=step,
        hfu=hfu,
        mfu=hfu * model_fpt / hw_fpt,
        tokens_per_step=tokens,
        model_flops_per_token=model_fpt,
        hw_flops_per_token=hw_fpt,
        microbatches=micro,
        kernel_efficiency=u_k,
        devices_used=used,
    )
