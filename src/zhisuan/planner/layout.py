"""Choose a parallel layout: the fastest (TP, PP, ZeRO, recompute) that fits in memory.

The search is small on purpose (at most ~24 step estimates): for each tensor-parallel degree
within the scale-up domain and each recompute mode it takes the fewest pipeline stages that fit,
with ZeRO-1; ZeRO-3 is tried only when nothing fits with ZeRO-1. Any of the four choices can be
fixed by the caller. Results are cached, so sweeps over tokens or prices cost nothing extra.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from zhisuan.catalog import Accelerator, ModelArch
from zhisuan.planner._common import Layout
from zhisuan.planner.memory import train_memory_gb, usable_gb
from zhisuan.planner.mfu import MfuParams, StepEstimate, step_estimate


@dataclass(frozen=True)
class LayoutChoice:
    """A layout, its step estimate, its memory per device and whether that fits."""

    layout: Layout
    step: StepEstimate
    memory_gb: float
    fits: bool


def _pow2_upto(limit: int) -> list[int]:
    out, v = [], 1
    while v <= limit:
        out.append(v)
        v *= 2
    return out


def tp_candidates(model: ModelArch, device: Accelerator, count: int) -> list[int]:
    """Tensor-parallel degrees worth trying: powers of two inside one scale-up domain.

    Args:
        model: architecture (TP must divide the head count).
        device: accelerator.
        count: devices in the job.

    Returns:
        Ascending degrees.
    """
    limit = min(device.devices_per_node, 16, count)
    return [t for t in _pow2_upto(limit) if model.heads % t == 0] or [1]


@lru_cache(maxsize=8192)
def choose_layout(
    model: ModelArch,
    device: Accelerator,
    count: int,
    seq: int,
    batch_seqs: float,
    precision: str,
    params: MfuParams,
    tp: int | None = None,
    pp: int | None = None,
    zero: int | None = None,
    recompute: str | None = None,
    micro_batch: int = 1,
) -> LayoutChoice:
    """The fastest layout that fits, honouring any fixed choice.

    Args:
        model: architecture.
        device: accelerator.
        count: devices.
        seq: sequence length.
        batch_seqs: global batch in sequences.
        precision: training precision.
        params: utilisation-model constants.
        tp: fixed tensor-parallel degree, or None to search.
        pp: fixed pipeline stages, or None to search.
        zero: fixed ZeRO stage, or None (1, then 3 if nothing fits).
        recompute: fixed recompute mode, or None (selective, full).
        micro_batch: sequences per micro-batch.

    Returns:
        The best fitting choice, or the smallest-memory one with ``fits=False``.
    """
    room = usable_gb(device)
    tps = [tp] if tp else tp_candidates(model, device, count)
    modes = [recompute] if recompute else ["selective", "full"]
    zeros = [zero] if zero is not None else [1, 3]
    best: LayoutChoice | None = None
    smallest: LayoutChoice | None = None
    for z in zeros:
        for t in tps:
            pps = [pp] if pp else [v for v in _pow2_upto(model.layers) if v * t <= count]
            for mode in modes:
                for stages in pps or [1]:
                    mp = t * stages
                    dp = max(count / mp, 1.0)
                    micro = max(batch_seqs / (dp * micro_batch), 1.0)
                    lay = Layout(t, stages, dp, z, mode, micro_batch)
                    mem = train_memory_gb(model, lay, seq, micro)
                    fits = mem <= room
                    if not fits and smallest is not None and smallest.memory_gb <= mem:
                        continue
                    est = step_estimate(
                        model,
                        device,
                        lay,
                        count=count,
                        seq=seq,
                        batch_seqs=batch_seqs,
                        precision=precision,
                        params=params,
                    )
                    choice = LayoutChoice(lay, est, mem, fits)
                    if not fits:
                        smallest = choice
                        continue
                    if best is None or est.step_s < best.step.step_s:
                        best = choice
                    break  # more stages only add bubble once it fits
        if best is not None:
            return best
    assert smallest is not None
    return smallest
