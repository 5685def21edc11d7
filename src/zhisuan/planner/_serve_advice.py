"""Advice for serving plans that do not fit or miss their latency limits."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from zhisuan.catalog import Accelerator, ModelArch
from zhisuan.planner._common import PRECISION_BYTES
from zhisuan.planner.memory import usable_gb, weights_gb

if TYPE_CHECKING:
    from zhisuan.planner.serve import ServeRequest


def largest(ok: object, hi: int) -> int:
    """Largest c in [1, hi] with ok(c) (ok is monotone: true then false); 0 when none."""
    assert callable(ok)
    if not ok(1):
        return 0
    lo = 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo


def advice(
    req: ServeRequest,
    model: ModelArch,
    device: Accelerator,
    devices: int,
    wgb: float,
    kv_seq: float,
    max_conc: int,
    conc: int,
    fits: bool,
    slo_met: bool,
) -> list[str]:
    """What would make an impossible or missed serving plan work, in plain words."""
    out: list[str] = []
    mem = usable_gb(device) * devices
    if not fits:
        need = wgb + kv_seq
        n = math.ceil(need / usable_gb(device))
        out.append(
            f"{model.id} needs {wgb:.1f} GB of {req.precision} weights plus {kv_seq:.2f} GB of "
            f"KV cache per sequence, but {devices} x {device.id} offer {mem:.1f} GB"
        )
        out.append(f"use --count {2 ** math.ceil(math.log2(max(n, 1)))} (tensor parallel)")
        for smaller in ("fp8", "int4"):
            if PRECISION_BYTES[smaller] < PRECISION_BYTES[req.precision]:
                w2 = weights_gb(model, PRECISION_BYTES[smaller])
                if w2 + kv_seq <= mem:
                    out.append(f"or quantise: --precision {smaller} ({w2:.1f} GB) fits")
                    break
    elif req.concurrency is not None and conc > max_conc:
        out.append(
            f"--concurrency {conc} needs {wgb + conc * kv_seq:.0f} GB but only {max_conc} "
            f"sequences of {req.prompt_tokens + req.output_tokens} tokens fit; use --count "
            f"{devices * 2} or --kv-precision fp8"
        )
    if not slo_met:
        out.append(
            "the latency limits are not met even at concurrency 1: use more devices per replica "
            "(--count), lower-precision weights (--precision fp8/int4) or a faster device"
        )
    return out
