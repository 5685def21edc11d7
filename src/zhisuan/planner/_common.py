"""Shared small types and constants of the planner."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from zhisuan.errors import InvalidParameter, PlanError

GB = 1e9
#: Share of device memory a framework can really use (CUDA context, allocator fragmentation).
USABLE_MEMORY_FRACTION = 0.92
#: Fixed per-device reserve in GB (runtime, NCCL buffers).
MEMORY_RESERVE_GB = 1.0

RECOMPUTE_MODES = ("none", "selective", "full")
#: Precisions a training plan takes: those the catalog gives a device's peak rate in.
TRAIN_PRECISIONS = ("fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "int8", "int4")
PRECISION_BYTES = {
    "fp32": 4.0,
    "fp16": 2.0,
    "bf16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    # 4-bit weights plus one FP16 scale per group of 128
    "int4": 0.5 + 2.0 / 128.0,
}


@dataclass(frozen=True)
class Layout:
    """How a training job is split over devices.

    Attributes:
        tp: tensor-parallel degree (within the scale-up domain when possible).
        pp: pipeline-parallel stages.
        dp: data-parallel replicas (``count / (tp * pp)``; may be fractional in estimates).
        zero: ZeRO stage 0-3 (1 = sharded optimizer state, Megatron's distributed optimizer).
        recompute: ``none`` (attention scores kept), ``selective`` (FlashAttention-style, the
            attention core recomputed) or ``full`` (only each layer's input kept).
        micro_batch: sequences per micro-batch.
    """

    tp: int = 1
    pp: int = 1
    dp: float = 1.0
    zero: int = 1
    recompute: str = "selective"
    micro_batch: int = 1

    def describe(self) -> str:
        """Short human form, e.g. ``TP8 x PP4 x DP312, ZeRO-1, full recompute``."""
        dp = f"{self.dp:.0f}" if abs(self.dp - round(self.dp)) < 1e-6 else f"{self.dp:.1f}"
        return (
            f"TP{self.tp} x PP{self.pp} x DP{dp}, ZeRO-{self.zero}, "
            f"{self.recompute} recompute, micro-batch {self.micro_batch}"
        )


def check_positive(value: float, name: str, *, allow_zero: bool = False) -> None:
    """Raise :class:`InvalidParameter` when ``value`` is negative (or zero).

    Args:
        value: the number to check.
        name: parameter name for the message.
        allow_zero: accept 0.

    Raises:
        InvalidParameter: the value is out of range.
    """
    if value != value or value < 0 or (value == 0 and not allow_zero):  # NaN or out of range
        need = "zero or more" if allow_zero else "more than zero"
        raise InvalidParameter(
            f"{name.replace('_', '-')} must be {need}, got {value}",
            param=name,
            hint=f"pass a positive --{name.replace('_', '-')}",
        )


def check_finite(request: Any, names: tuple[str, ...]) -> None:
    """Raise :class:`PlanError` when one of the ``names`` fields of ``request`` is NaN or
    infinite (every answer would be, and JSON has no such numbers).

    Args:
        request: a plan request (dataclass).
        names: the fields to check; None values are left out.

    Raises:
        PlanError: the first field that is not finite.
    """
    for name in names:
        value = getattr(request, name)
        if value is not None and not math.isfinite(value):
            flag = name.replace("_", "-")
            raise PlanError(f"--{flag} must be a finite number, got {value}", param=name)
