"""``plan serve``: memory, latency, throughput, capacity, cost and energy of LLM serving.

One replica spans ``count`` devices (tensor parallel). Per decode step at batch ``B``::

    step(B) = max(bytes / (devices · bw · 0.8),  B · FLOPs_token / (devices · peak · u_k)) + TP comm
    bytes   = weights read (MoE: only experts some token routes to) + B · KV bytes at the context

Prefill is compute-bound: FLOPs(prompt) / (devices · peak · u_k) (``u_k`` from the fitted
utilisation model). At a concurrency ``C`` with continuous batching, each request needs one
prefill per ``O`` output tokens, so prefills interleave with decode steps::

    TTFT = prefill(P) + step(C)            TPOT = step(C) + C / O · prefill(P)
    output tokens/s per replica = C / TPOT

MLPerf Inference latency limits (p99 TTFT / p99 TPOT) are available as ``--slo`` presets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from zhisuan.catalog import Accelerator, Catalog, ModelArch, ModelResolver, load_catalog
from zhisuan.errors import InvalidParameter, PlanError
from zhisuan.planner import costs
from zhisuan.planner._common import GB, PRECISION_BYTES, check_finite, check_positive
from zhisuan.planner._serve_advice import advice as serve_advice
from zhisuan.planner._serve_advice import largest
from zhisuan.planner.flops import decode_flops_per_token, matmul_params, prefill_flops
from zhisuan.planner.memory import kv_cache_gb_per_seq, usable_gb, weights_gb
from zhisuan.planner.mfu import FITTED, kernel_efficiency

#: Share of peak memory bandwidth decode kernels reach (fixed, not fitted).
BANDWIDTH_EFFICIENCY = 0.8
#: Latency of one small all-reduce over a fast scale-up link / over PCIe, seconds.
ALLREDUCE_LATENCY_S = (8e-6, 25e-6)
MAX_CONCURRENCY = 4096

#: MLPerf Inference datacenter LLM latency constraints (p99), milliseconds.
SLO_PRESETS: dict[str, tuple[float, float, str]] = {
    "llama2-70b": (2000.0, 200.0, "MLPerf Inference v4.0+ Llama 2 70B server scenario"),
    "llama2-70b-interactive": (450.0, 40.0, "MLPerf Inference v5.0 Llama 2 70B interactive"),
    "llama3.1-405b": (6000.0, 175.0, "MLPerf Inference v5.0 Llama 3.1 405B server scenario"),
}


@dataclass
class ServeRequest:
    """Inputs of a serving plan (names match the CLI flags and the HTTP body).

    ``count`` is devices per replica (tensor parallel); None picks the fewest that hold the model.
    ``concurrency`` None picks the largest batch that fits and meets the latency limits.
    """

    model: str | ModelArch
    device: str | Accelerator = "h100-sxm"
    count: int | None = None
    precision: str = "bf16"
    kv_precision: str = "fp16"
    prompt_tokens: int = 1024
    output_tokens: int = 256
    concurrency: int | None = None
    rate: float | None = None
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    slo: str | None = None
    pue: float = costs.DEFAULT_PUE
    power: str = "tdp"
    avg_power_w: float | None = None
    price_per_hour: float | None = None
    currency: str | None = None


@dataclass
class ServeResult:
    """A serving plan. ``to_json()`` carries the stable keys plus details."""

    model: str
    device: str
    count: int
    weights_gb: float
    kv_cache_gb_per_seq: float
    max_concurrency: int
    concurrency: int
    ttft_ms: float
    tpot_ms: float
    tokens_per_s: float
    devices_needed: int | None
    replicas: int | None
    cost_per_mtok: float | None
    currency: str
    wh_per_ktok: float
    fits: bool
    slo_met: bool
    memory_available_gb: float
    prefill_ms: float
    decode_step_ms: float
    bound: str
    advice: list[str] = field(default_factory=list)
    assumptions: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict; the keys the CLI and HTTP API promise come first."""
        return {
            "weights_gb": self.weights_gb,
            "kv_cache_gb_per_seq": self.kv_cache_gb_per_seq,
            "max_concurrency": self.max_concurrency,
            "ttft_ms": self.ttft_ms,
            "tpot_ms": self.tpot_ms,
            "tokens_per_s": self.tokens_per_s,
            "devices_needed": self.devices_needed,
            "cost_per_mtok": self.cost_per_mtok,
            "wh_per_ktok": self.wh_per_ktok,
            "fits": self.fits,
            "model": self.model,
            "device": self.device,
            "count": self.count,
            "concurrency": self.concurrency,
            "replicas": self.replicas,
            "currency": self.currency,
            "slo_met": self.slo_met,
            "memory_available_gb": self.memory_available_gb,
            "prefill_ms": self.prefill_ms,
            "decode_step_ms": self.decode_step_ms,
            "bound": self.bound,
            "advice": self.advice,
            "assumptions": self.assumptions,
        }


@dataclass(frozen=True)
class _Engine:
    """Per-replica constants of the latency model (seconds, bytes, FLOP/s)."""

    model: ModelArch
    devices: int
    peak: float
    u_k: float
    bw: float
    weight_bytes: float
    expert_bytes: float
    kv_token_bytes: float
    allreduce_s: float

    def _comm(self, tokens: float) -> float:
        if self.devices == 1:
            return 0.0
        return 2.0 * self.model.layers * self.allreduce_s * (1.0 + tokens / 4096.0)

    def prefill_s(self, prompt: int) -> float:
        compute = prefill_flops(self.model, prompt) / (self.devices * self.peak * self.u_k)
        memory = self.weight_bytes / (self.devices * self.bw)
        return max(compute, memory) + self._comm(prompt)

    def step_s(self, batch: int, context: float) -> tuple[float, str]:
        weights = self.weight_bytes
        moe = self.model.moe
        if moe is not None and self.expert_bytes > 0:
            touched = 1.0 - (1.0 - moe.top_k / moe.experts) ** batch
            weights = self.weight_bytes - self.expert_bytes * (1.0 - touched)
        memory = (weights + batch * self.kv_token_bytes * context) / (self.devices * self.bw)
        compute = batch * decode_flops_per_token(self.model, context)
        compute /= self.devices * self.peak * self.u_k
        bound = "memory-bandwidth" if memory >= compute else "compute"
        return max(memory, compute) + self._comm(batch), bound


def _compute_precision(precision: str) -> str:
    # INT4 is weight-only (dequantised to 16 bit); FP8 and INT8 run W8A8 kernels.
    return {"int4": "bf16", "fp16": "fp16"}.get(precision, precision)


def _validate(req: ServeRequest) -> None:
    check_finite(req, ("rate", "ttft_ms", "tpot_ms", "pue", "avg_power_w", "price_per_hour"))
    if req.count is not None and req.count <= 0:
        raise PlanError(
            f"a replica needs at least one device, got --count {req.count}",
            param="count",
            hint="pass --count 1 or more, or leave it out to let the planner choose",
        )
    if req.prompt_tokens < 0 or req.output_tokens <= 0:
        raise PlanError(
            "--prompt-tokens must be >= 0 and --output-tokens > 0, got "
            f"{req.prompt_tokens} and {req.output_tokens}",
            param="output_tokens" if req.output_tokens <= 0 else "prompt_tokens",
        )
    if req.concurrency is not None and req.concurrency <= 0:
        raise PlanError(f"--concurrency must be 1 or more, got {req.concurrency}")
    for name in ("rate", "ttft_ms", "tpot_ms"):
        value = getattr(req, name)
        if value is not None:
            check_positive(float(value), name)
    if req.precision not in PRECISION_BYTES:
        raise InvalidParameter(
            f"--precision must be one of {', '.join(PRECISION_BYTES)}, got {req.precision!r}",
            param="precision",
        )
    if req.kv_precision not in ("fp16", "bf16", "fp8", "int8"):
        raise InvalidParameter("--kv-precision is fp16, bf16, fp8 or int8", param="kv_precision")
    if req.slo is not None and req.slo not in SLO_PRESETS:
        raise InvalidParameter(
            f"unknown --slo {req.slo!r}; presets: {', '.join(SLO_PRESETS)}", param="slo"
        )
    if req.pue < 1.0:
        raise PlanError(f"--pue is at least 1.0 by definition, got {req.pue}", param="pue")
    if req.power not in ("tdp", "average"):
        raise PlanError(f"--power is tdp or average, got {req.power!r}", param="power")


def _auto_devices(model: ModelArch, device: Accelerator, wgb: float, kv_seq: float) -> int:
    n = 1
    while n < device.devices_per_node and usable_gb(device) * n < wgb + kv_seq:
        n *= 2
    return n


def plan_serve(
    req: ServeRequest,
    *,
    catalog: Catalog | None = None,
    resolver: ModelResolver | None = None,
) -> ServeResult:
    """Plan serving a model.

    Args:
        req: the request.
        catalog: catalog for names (default: built-in).
        resolver: maps a model-store name to its config path.

    Returns:
        The plan; ``fits`` is False (with ``advice``) when the weights and one sequence do not
        fit, ``slo_met`` is False when no concurrency meets the latency limits.

    Raises:
        PlanError: impossible inputs.
        NotFound: unknown model or device.
        InvalidParameter: unknown precision or SLO preset.
    """
    _validate(req)
    cat = catalog if catalog is not None else load_catalog()
    model = req.model if isinstance(req.model, ModelArch) else cat.model(req.model, resolver)
    device = req.device if isinstance(req.device, Accelerator) else cat.accelerator(req.device)
    ttft_lim, tpot_lim = req.ttft_ms, req.tpot_ms
    if req.slo is not None:
        preset = SLO_PRESETS[req.slo]
        ttft_lim = ttft_lim if ttft_lim is not None else preset[0]
        tpot_lim = tpot_lim if tpot_lim is not None else preset[1]
    bpp = PRECISION_BYTES[req.precision]
    kv_b = PRECISION_BYTES[req.kv_precision]
    seq_tokens = req.prompt_tokens + req.output_tokens
    wgb = weights_gb(model, bpp)
    kv_seq = kv_cache_gb_per_seq(model, seq_tokens, kv_b)
    devices = req.count or _auto_devices(model, device, wgb, kv_seq)
    mem = usable_gb(device) * devices
    max_conc = max(0, min(MAX_CONCURRENCY, int((mem - wgb) / kv_seq))) if mem > wgb else 0
    fits = max_conc >= 1
    peak = device.peak_tflops(_compute_precision(req.precision)) * 1e12
    mats = 3 if model.gated_mlp else 2
    expert_params = 0.0
    if model.moe is not None:
        moe_layers = model.layers - model.moe.dense_layers
        expert_params = moe_layers * model.moe.experts * mats * model.hidden * model.ffn
    fast = device.interconnect_gbs >= 200
    link_s = ALLREDUCE_LATENCY_S[0] if fast else ALLREDUCE_LATENCY_S[1]
    eng = _Engine(
        model=model,
        devices=devices,
        peak=peak,
        u_k=kernel_efficiency(model, device, peak, FITTED),
        bw=device.memory_bw_tbs * 1e12 * BANDWIDTH_EFFICIENCY,
        weight_bytes=wgb * GB,
        expert_bytes=expert_params * bpp,
        kv_token_bytes=model.kv_bytes_per_token(kv_b),
        allreduce_s=link_s,
    )
    context = req.prompt_tokens + req.output_tokens / 2.0
    prefill = eng.prefill_s(req.prompt_tokens)

    def latency(c: int) -> tuple[float, float, str]:
        step, bound = eng.step_s(c, context)
        return prefill + step, step + c / req.output_tokens * prefill, bound

    def meets(c: int) -> bool:
        ttft, tpot, _ = latency(c)
        ok_ttft = ttft_lim is None or ttft * 1e3 <= ttft_lim
        return ok_ttft and (tpot_lim is None or tpot * 1e3 <= tpot_lim)

    slo_met = True
    if req.concurrency is not None:
        conc = req.concurrency
        slo_met = meets(conc)
    else:
        conc = max(max_conc, 1)
        if not meets(conc):
            conc = largest(meets, conc)
            slo_met = conc >= 1
            conc = max(conc, 1)
    ttft, tpot, bound = latency(conc)
    tokens_per_s = conc / tpot
    advice = serve_advice(req, model, device, devices, wgb, kv_seq, max_conc, conc, fits, slo_met)
    fits = fits and conc <= max_conc
    replicas: int | None = None
    needed: int | None = None
    if fits and slo_met:
        replicas = 1
        if req.rate is not None:
            per_replica = tokens_per_s / req.output_tokens  # requests/s
            replicas = max(1, math.ceil(req.rate / per_replica))
        needed = replicas * devices
    currency = (req.currency or device.price.currency).upper()
    hourly: float | None = req.price_per_hour
    if hourly is None and device.price.hourly is not None:
        hourly = costs.convert(device.price.hourly, device.price.currency, currency)
    cost = None if hourly is None else devices * hourly / (tokens_per_s * 3600.0) * 1e6
    watts = (req.avg_power_w or device.power_w) if req.power == "average" else device.tdp_w
    wh_ktok = devices * watts * req.pue / tokens_per_s / 3.6
    return ServeResult(
        model=model.id,
        device=device.id,
        count=devices,
        weights_gb=wgb,
        kv_cache_gb_per_seq=kv_seq,
        max_concurrency=max_conc,
        concurrency=conc,
        ttft_ms=ttft * 1e3,
        tpot_ms=tpot * 1e3,
        tokens_per_s=tokens_per_s,
        devices_needed=needed,
        replicas=replicas,
        cost_per_mtok=cost,
        currency=currency,
        wh_per_ktok=wh_ktok,
        fits=fits,
        slo_met=slo_met,
        memory_available_gb=mem,
        prefill_ms=prefill * 1e3,
        decode_step_ms=eng.step_s(conc, context)[0] * 1e3,
        bound=bound,
        advice=advice,
        assumptions={
            "precision": req.precision,
            "kv_precision": req.kv_precision,
            "prompt_tokens": req.prompt_tokens,
            "output_tokens": req.output_tokens,
            "ttft_limit_ms": ttft_lim,
            "tpot_limit_ms": tpot_lim,
            "slo": req.slo,
            "rate": req.rate,
            "attention": model.attention_kind,
            "active_params_b": matmul_params(model) / 1e9,
            "bandwidth_efficiency": BANDWIDTH_EFFICIENCY,
            "kernel_efficiency": eng.u_k,
            "pue": req.pue,
            "watts_per_device": watts,
            "tokens_counted": "output tokens",
        },
    )
