"""``plan train``: FLOPs, time, memory, scaling, energy, CO2 and cost of a training run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zhisuan.catalog import Accelerator, Catalog, ModelArch, ModelResolver, load_catalog
from zhisuan.errors import InvalidParameter, PlanError
from zhisuan.planner import costs
from zhisuan.planner._common import (
    RECOMPUTE_MODES,
    TRAIN_PRECISIONS,
    Layout,
    check_finite,
    check_positive,
)
from zhisuan.planner.flops import PF_DAY, flops_6nd
from zhisuan.planner.layout import LayoutChoice, choose_layout
from zhisuan.planner.memory import min_devices_zero3, usable_gb
from zhisuan.planner.mfu import FITTED, MfuParams, step_estimate

DEFAULT_BATCH_TOKENS = 4 * 1024 * 1024


@dataclass
class TrainRequest:
    """Inputs of a training plan (names match the CLI flags and the HTTP body).

    ``model`` and ``device`` may be names (looked up in the catalog) or catalog objects.
    Leave ``tp``/``pp``/``zero``/``recompute`` as None to let the planner choose the fastest
    layout that fits; set ``mfu``/``efficiency`` to override the model.
    """

    model: str | ModelArch
    tokens: float
    device: str | Accelerator = "h100-sxm"
    count: int = 8
    precision: str = "bf16"
    seq_len: int | None = None
    batch_tokens: float | None = None
    mfu: float | None = None
    efficiency: float | None = None
    tp: int | None = None
    pp: int | None = None
    zero: int | None = None
    recompute: str | None = None
    micro_batch: int = 1
    pue: float = costs.DEFAULT_PUE
    power: str = "tdp"
    avg_power_w: float | None = None
    grid_kg_per_kwh: float = costs.DEFAULT_GRID_KG_PER_KWH
    price_per_hour: float | None = None
    currency: str | None = None
    cost_mode: str = "rent"
    electricity_per_kwh: float | None = None
    scaling: bool = True


@dataclass
class TrainResult:
    """A training plan. ``to_json()`` carries the stable keys plus details."""

    model: str
    device: str
    count: int
    tokens: float
    flops: float
    flops_6nd: float
    pf_days: float
    mfu: float
    hfu: float
    efficiency: float
    scaling_efficiency: float
    wall_days: float
    gpu_hours: float
    energy_mwh: float
    co2_t: float
    cost: float | None
    currency: str
    memory_per_device_gb: float
    memory_available_gb: float
    fits: bool
    layout: Layout
    tokens_per_s_per_device: float
    step: dict[str, float]
    advice: list[str] = field(default_factory=list)
    scaling: list[dict[str, float]] = field(default_factory=list)
    assumptions: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict; the keys the CLI and HTTP API promise come first."""
        return {
            "flops": self.flops,
            "pf_days": self.pf_days,
            "mfu": self.mfu,
            "efficiency": self.efficiency,
            "wall_days": self.wall_days,
            "gpu_hours": self.gpu_hours,
            "energy_mwh": self.energy_mwh,
            "co2_t": self.co2_t,
            "cost": self.cost,
            "memory_per_device_gb": self.memory_per_device_gb,
            "fits": self.fits,
            "model": self.model,
            "device": self.device,
            "count": self.count,
            "tokens": self.tokens,
            "flops_6nd": self.flops_6nd,
            "hfu": self.hfu,
            "scaling_efficiency": self.scaling_efficiency,
            "currency": self.currency,
            "memory_available_gb": self.memory_available_gb,
            "layout": {
                "tp": self.layout.tp,
                "pp": self.layout.pp,
                "dp": self.layout.dp,
                "zero": self.layout.zero,
                "recompute": self.layout.recompute,
                "micro_batch": self.layout.micro_batch,
            },
            "tokens_per_s_per_device": self.tokens_per_s_per_device,
            "step": self.step,
            "advice": self.advice,
            "scaling": self.scaling,
            "assumptions": self.assumptions,
        }


FINITE = (
    "tokens", "batch_tokens", "mfu", "efficiency", "pue", "avg_power_w", "grid_kg_per_kwh",
    "price_per_hour", "electricity_per_kwh",
)  # fmt: skip
"""The numbers of a training request, each of which must be finite."""


def _validate(req: TrainRequest) -> None:
    check_finite(req, FINITE)
    if req.count <= 0:
        raise PlanError(
            f"a training plan needs at least one device, got --count {req.count}",
            param="count",
            hint="pass --count 1 or more (e.g. --count 8 for one server)",
        )
    if req.tokens <= 0:
        raise PlanError(
            f"--tokens must be a positive number of training tokens, got {req.tokens:g}",
            param="tokens",
            hint="e.g. --tokens 1e12 for one trillion tokens",
        )
    for name in ("pue", "grid_kg_per_kwh"):
        check_positive(float(getattr(req, name)), name, allow_zero=name != "pue")
    if req.pue < 1.0:
        raise PlanError(f"--pue is at least 1.0 by definition, got {req.pue}", param="pue")
    for name in ("seq_len", "batch_tokens", "avg_power_w"):
        value = getattr(req, name)
        if value is not None:
            check_positive(value, name)
    for name in ("price_per_hour", "electricity_per_kwh"):
        value = getattr(req, name)
        if value is not None:
            check_positive(value, name, allow_zero=True)
    if req.precision not in TRAIN_PRECISIONS:
        raise InvalidParameter(
            f"--precision must be one of {', '.join(TRAIN_PRECISIONS)}, got {req.precision!r}",
            param="precision",
        )
    if req.mfu is not None and not 0.0 < req.mfu <= 1.0:
        raise PlanError(f"--mfu must be in (0, 1], got {req.mfu}", param="mfu")
    if req.efficiency is not None and not 0.0 < req.efficiency <= 1.0:
        raise PlanError(f"--efficiency must be in (0, 1], got {req.efficiency}")
    if req.power not in ("tdp", "average"):
        raise PlanError(f"--power is tdp or average, got {req.power!r}", param="power")
    if req.recompute is not None and req.recompute not in RECOMPUTE_MODES:
        raise PlanError(f"--recompute is one of {', '.join(RECOMPUTE_MODES)}")
    if req.zero is not None and req.zero not in (0, 1, 2, 3):
        raise PlanError(f"--zero is 0, 1, 2 or 3, got {req.zero}", param="zero")
    if req.cost_mode not in ("rent", "buy"):
        raise PlanError(f"--cost-mode is rent or buy, got {req.cost_mode!r}")
    for name in ("tp", "pp"):
        value = getattr(req, name)
        if value is not None and value <= 0:
            raise PlanError(f"--{name} must be 1 or more, got {value}", param=name)
    if (req.tp or 1) * (req.pp or 1) > req.count:
        raise PlanError(
            f"--tp {req.tp or 1} x --pp {req.pp or 1} needs {(req.tp or 1) * (req.pp or 1)} "
            f"devices but --count is {req.count}",
            hint="raise --count or lower --tp/--pp",
        )


def _advice(
    model: ModelArch, device: Accelerator, req: TrainRequest, choice: LayoutChoice, seq: int
) -> list[str]:
    room = usable_gb(device)
    out = [
        f"needs {choice.memory_gb:.1f} GB per device with {choice.layout.describe()}, "
        f"but {device.id} offers about {room:.1f} GB usable"
    ]
    fixed = any(v is not None for v in (req.tp, req.pp, req.zero, req.recompute))
    if fixed:
        auto = choose_layout(
            model,
            device,
            req.count,
            seq,
            choice.step.tokens_per_step / seq,
            req.precision,
            FITTED,
            micro_batch=req.micro_batch,
        )
        if auto.fits:
            out.append(
                f"this layout fits instead: {auto.layout.describe()} (drop --tp/--pp/--zero)"
            )
            return out
    need = min_devices_zero3(model, device, seq)
    if need == 0:
        out.append(
            f"one sequence of {seq} tokens does not fit even with full recompute and TP "
            f"{min(device.devices_per_node, 8)}: use a shorter --seq-len or a larger device"
        )
    elif need > req.count:
        out.append(
            f"use ZeRO-3 (or more pipeline stages) on >= {need} devices: --count {need} --zero 3"
        )
    else:
        out.append("use --zero 3 with --recompute full, or raise --tp/--pp")
    return out


def plan_train(
    req: TrainRequest,
    *,
    catalog: Catalog | None = None,
    resolver: ModelResolver | None = None,
    params: MfuParams | None = None,
) -> TrainResult:
    """Plan a training run.

    Args:
        req: the request.
        catalog: catalog to resolve names (default: the built-in one).
        resolver: maps a model-store name to its config path.
        params: utilisation-model constants (default: :data:`FITTED`).

    Returns:
        The plan; ``fits`` is False (with ``advice``) when no layout fits in memory.

    Raises:
        PlanError: impossible inputs (no devices, negative tokens, bad options).
        NotFound: unknown model or device.
    """
    _validate(req)
    cat = catalog if catalog is not None else load_catalog()
    model = req.model if isinstance(req.model, ModelArch) else cat.model(req.model, resolver)
    device = req.device if isinstance(req.device, Accelerator) else cat.accelerator(req.device)
    p = params or FITTED
    seq = int(req.seq_len or model.seq_len)
    batch_tokens = float(req.batch_tokens or DEFAULT_BATCH_TOKENS)
    batch_seqs = max(batch_tokens / seq, 1.0)
    choice = choose_layout(
        model, device, req.count, seq, batch_seqs, req.precision, p,
        req.tp, req.pp, req.zero, req.recompute, req.micro_batch,
    )  # fmt: skip
    est = choice.step
    peak = device.peak_tflops(req.precision) * 1e12
    flops = est.model_flops_per_token * req.tokens
    mfu = req.mfu if req.mfu is not None else est.mfu
    eff = req.efficiency if req.efficiency is not None else costs.end_to_end_efficiency(req.count)
    busy = est.devices_used if req.mfu is None else float(req.count)
    seconds = flops / (busy * peak * mfu) / eff
    hours = seconds / 3600.0
    gpu_hours = req.count * hours
    watts = (req.avg_power_w or device.power_w) if req.power == "average" else device.tdp_w
    energy = costs.energy_mwh(req.count, hours, watts=watts, pue=req.pue)
    currency = (req.currency or device.price.currency).upper()
    cost: float | None = None
    electricity = req.electricity_per_kwh
    if electricity is None:
        electricity = costs.convert(costs.DEFAULT_ELECTRICITY_USD_PER_KWH, "USD", currency)
    if req.cost_mode == "rent":
        if req.price_per_hour is not None:
            cost = gpu_hours * req.price_per_hour
        elif device.price.hourly is not None:
            hourly = costs.convert(device.price.hourly, device.price.currency, currency)
            cost = gpu_hours * hourly
    elif device.price.purchase is not None:
        each = costs.convert(device.price.purchase, device.price.currency, currency)
        cost = costs.purchase_cost(
            devices=req.count, price_each=each, hours=hours, energy_mwh_total=energy,
            electricity_per_kwh=electricity,
        )  # fmt: skip
    hw_ratio = est.hw_flops_per_token / est.model_flops_per_token
    scaling, scaling_eff = _scaling(model, device, req, choice, seq, batch_seqs, p)
    advice = [] if choice.fits else _advice(model, device, req, choice, seq)
    return TrainResult(
        model=model.id,
        device=device.id,
        count=req.count,
        tokens=req.tokens,
        flops=flops,
        flops_6nd=flops_6nd(model, req.tokens),
        pf_days=flops / PF_DAY,
        mfu=mfu,
        hfu=est.hfu if req.mfu is None else mfu * hw_ratio,
        efficiency=eff,
        scaling_efficiency=scaling_eff,
        wall_days=seconds / 86400.0,
        gpu_hours=gpu_hours,
        energy_mwh=energy,
        co2_t=energy * req.grid_kg_per_kwh,
        cost=cost,
        currency=currency,
        memory_per_device_gb=choice.memory_gb,
        memory_available_gb=usable_gb(device),
        fits=choice.fits,
        layout=choice.layout,
        tokens_per_s_per_device=req.tokens / seconds / req.count,
        step={
            "step_s": est.step_s,
            "compute_s": est.compute_s,
            "tp_comm_s": est.tp_s,
            "pipeline_bubble_s": est.bubble_s,
            "dp_comm_s": est.dp_s,
            "microbatches": est.microbatches,
            "kernel_efficiency": est.kernel_efficiency,
        },
        advice=advice,
        scaling=scaling,
        assumptions={
            "seq_len": seq,
            "batch_tokens": batch_tokens,
            "precision": req.precision,
            "peak_tflops": peak / 1e12,
            "pue": req.pue,
            "power": req.power,
            "watts_per_device": watts,
            "grid_kg_per_kwh": req.grid_kg_per_kwh,
            "cost_mode": req.cost_mode,
            "mfu_source": "--mfu" if req.mfu is not None else "fitted utilisation model",
            "params_b": model.params / 1e9,
            "active_params_b": model.active_params / 1e9,
        },
    )


def _scaling(
    model: ModelArch,
    device: Accelerator,
    req: TrainRequest,
    choice: LayoutChoice,
    seq: int,
    batch_seqs: float,
    p: MfuParams,
) -> tuple[list[dict[str, float]], float]:
    """Per-device throughput at other cluster sizes with the same layout."""
    lay = choice.layout
    mp = lay.tp * lay.pp
    ref = mp * max(1, device.devices_per_node // mp) if mp <= device.devices_per_node else mp
    ref = min(ref, req.count)

    def per_device(n: int) -> float:
        est = step_estimate(
            model, device, lay, count=n, seq=seq, batch_seqs=batch_seqs,
            precision=req.precision, params=p,
        )  # fmt: skip
        return est.tokens_per_step / est.step_s / n

    base = per_device(ref)
    here = per_device(req.count)
    rows: list[dict[str, float]] = []
    if req.scaling:
        counts = sorted({max(mp, (req.count * f // mp) * mp) for f in (0.25, 0.5, 1, 2, 4)})
        for n in counts:
            n = int(n)
            rate = per_device(n)
            eff = costs.end_to_end_efficiency(n)
            days = req.tokens / (rate * n * eff) / 86400.0
            rows.append(
                {
                    "count": float(n),
                    "wall_days": days,
                    "scaling_efficiency": rate / base,
                    "end_to_end_efficiency": eff,
                }
            )
    return rows, here / base
