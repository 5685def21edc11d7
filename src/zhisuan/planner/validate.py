"""Validate the planner against published runs and the figures in the background articles.

Each row of ``planner/data/published_runs.yaml`` names what is predicted (``kind``), the
published value, the published inputs, and its role: ``calibration`` (the utilisation model is
fitted on these), ``test`` (predicted with no per-row tuning), ``check`` (arithmetic or catalog
checks) or ``flag`` (a claim the planner should show to be inconsistent).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from zhisuan.catalog import Catalog, ModelArch, load_catalog, model_from_dict
from zhisuan.planner import costs
from zhisuan.planner._common import Layout
from zhisuan.planner.flops import PF_DAY, flops_6nd, train_flops_per_token
from zhisuan.planner.mfu import FITTED, MfuParams, step_estimate
from zhisuan.planner.train import TrainRequest, plan_train

ROLES = ("calibration", "test", "check", "flag")


@dataclass(frozen=True)
class Run:
    """One published figure with its inputs."""

    id: str
    role: str
    kind: str
    what: str
    published: Any
    unit: str
    inputs: dict[str, Any]
    source: str
    tolerance: float | None = None


@dataclass
class Row:
    """A validation result."""

    run: Run
    predicted: float | None
    error: float | None
    ok: bool | None
    note: str = ""


@dataclass
class Report:
    """All rows plus the summary statistics."""

    rows: list[Row] = field(default_factory=list)
    params: MfuParams = FITTED

    def errors(self, role: str) -> list[float]:
        """Absolute relative errors of the rows with this role."""
        return [abs(r.error) for r in self.rows if r.run.role == role and r.error is not None]

    @property
    def median_test_error(self) -> float:
        """Median absolute relative error over the test rows."""
        errs = self.errors("test")
        return statistics.median(errs) if errs else 0.0

    @property
    def median_calibration_error(self) -> float:
        """Median absolute relative error over the calibration rows."""
        errs = self.errors("calibration")
        return statistics.median(errs) if errs else 0.0

    def to_json(self) -> dict[str, Any]:
        """JSON-ready report."""
        return {
            "median_abs_error_test": self.median_test_error,
            "median_abs_error_calibration": self.median_calibration_error,
            "fitted": {
                "u_max": self.params.u_max,
                "c_kernel": self.params.c_kernel,
                "k_comm": self.params.k_comm,
            },
            "calibration_rows": [r.run.id for r in self.rows if r.run.role == "calibration"],
            "test_rows": [r.run.id for r in self.rows if r.run.role == "test"],
            "rows": [
                {
                    "id": r.run.id,
                    "role": r.run.role,
                    "what": r.run.what,
                    "predicted": r.predicted,
                    "published": r.run.published,
                    "unit": r.run.unit,
                    "error": r.error,
                    "ok": r.ok,
                    "note": r.note,
                    "source": r.run.source,
                }
                for r in self.rows
            ],
        }


@lru_cache(maxsize=1)
def load_runs() -> tuple[Run, ...]:
    """The published runs shipped with the package.

    Returns:
        Rows in file order.
    """
    text = (resources.files("zhisuan.planner") / "data" / "published_runs.yaml").read_text(
        encoding="utf-8"
    )
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    data = yaml.load(text, Loader=loader)
    runs = []
    for raw in data["runs"]:
        runs.append(
            Run(
                id=str(raw["id"]),
                role=str(raw["role"]),
                kind=str(raw["kind"]),
                what=str(raw.get("what", raw["id"])),
                published=raw["published"],
                unit=str(raw.get("unit", "")),
                inputs=dict(raw.get("inputs") or {}),
                source=str(raw.get("source", "")),
                tolerance=raw.get("tolerance"),
            )
        )
    return tuple(runs)


def _model(inputs: dict[str, Any], cat: Catalog) -> ModelArch:
    arch = inputs.get("arch")
    if arch is not None:
        return model_from_dict(dict(arch), origin="published_runs.yaml")
    return cat.model(str(inputs["model"]))


def _train(inputs: dict[str, Any], cat: Catalog, params: MfuParams, **extra: Any) -> Any:
    seq = inputs.get("seq_len")
    model = _model(inputs, cat)
    batch_tokens = inputs.get("batch_tokens")
    if batch_tokens is None and "batch_seqs" in inputs:
        batch_tokens = float(inputs["batch_seqs"]) * float(seq or model.seq_len)
    req = TrainRequest(
        model=model,
        tokens=float(inputs.get("tokens", 1e12)),
        device=cat.accelerator(str(inputs["device"])),
        count=int(inputs["count"]),
        seq_len=seq,
        batch_tokens=batch_tokens,
        tp=inputs.get("tp"),
        pp=inputs.get("pp"),
        recompute=inputs.get("recompute"),
        scaling=False,
        **extra,
    )
    return plan_train(req, catalog=cat, params=params)


def _hw_tflops(inputs: dict[str, Any], cat: Catalog, params: MfuParams) -> float:
    model = _model(inputs, cat)
    device = cat.accelerator(str(inputs["device"]))
    layout = Layout(
        tp=int(inputs["tp"]), pp=int(inputs["pp"]), zero=0, recompute=str(inputs["recompute"])
    )
    est = step_estimate(
        model,
        device,
        layout,
        count=float(inputs["count"]),
        seq=model.seq_len,
        batch_seqs=float(inputs["batch_seqs"]),
        params=params,
    )
    return est.hfu * device.peak_tflops("bf16")


def predict(run: Run, cat: Catalog, params: MfuParams = FITTED) -> tuple[float, str]:
    """Predict one row.

    Args:
        run: the published row.
        cat: catalog.
        params: utilisation-model constants.

    Returns:
        (prediction, note).
    """
    i = run.inputs
    kind = run.kind
    simple: dict[str, Callable[[], float]] = {
        "flops_6nd": lambda: flops_6nd(_model(i, cat), float(i["tokens"])),
        "pf_days_6nd": lambda: flops_6nd(_model(i, cat), float(i["tokens"])) / PF_DAY,
        "flops_model": lambda: (
            train_flops_per_token(_model(i, cat), int(i["seq_len"])) * float(i["tokens"])
        ),
        "params_b": lambda: _model(i, cat).params / 1e9,
        "energy_average": lambda: costs.energy_mwh(
            float(i["count"]), float(i["days"]) * 24.0, watts=float(i["watts"]), pue=i["pue"]
        ),
        "energy_tdp": lambda: costs.energy_mwh(
            1.0, float(i["gpu_hours"]), watts=float(i["watts"]), pue=float(i["pue"])
        ),
        "co2": lambda: float(i["energy_mwh"]) * float(i["grid_kg_per_kwh"]),
        "e2e_efficiency": lambda: costs.end_to_end_efficiency(float(i["count"])),
        "hw_tflops": lambda: _hw_tflops(i, cat, params),
    }
    if kind in simple:
        return simple[kind](), ""
    if kind == "e2e_tflops_6nd":
        res = _train(i, cat, params)
        return res.flops_6nd / (res.wall_days * 86400.0 * res.count) / 1e12, ""
    if kind == "steady_days":
        return _train(i, cat, params, efficiency=1.0).wall_days, "steady state (no failures)"
    if kind == "gpu_hours":
        return _train(i, cat, params, efficiency=1.0).gpu_hours, "steady state"
    if kind == "tokens_per_gpu_s":
        return _train(i, cat, params, efficiency=1.0).tokens_per_s_per_device, ""
    if kind == "mfu":
        res = _train(i, cat, params)
        return res.mfu, f"layout {res.layout.describe()}"
    if kind == "cost_rent":
        dev = cat.accelerator(str(i["device"]))
        hourly = costs.convert(float(dev.price.hourly or 0.0), dev.price.currency, i["currency"])
        gpu_h = float(i["count"]) * float(i["days"]) * 24.0
        return gpu_h * hourly, f"{gpu_h:,.0f} GPU-h x {hourly:g} {i['currency']}/GPU-h (catalog)"
    if kind == "days_for_claim":
        res = _train(i, cat, params)
        model = _model(i, cat)
        achieved = float(i["achieved_tflops"]) * 1e12
        arith = flops_6nd(model, float(i["tokens"])) / (float(i["count"]) * achieved) / 86400.0
        note = (
            f"INCONSISTENT: {i['count']:,} V100 need ~{res.wall_days:.0f} days by the planner "
            f"(~{arith:.0f} days at GPT-3's achieved {i['achieved_tflops']} TFLOP/s per GPU); "
            "14.8 days matches the 10,000 GPUs of the primary source"
        )
        return res.wall_days, note
    if kind == "purchase":
        dev = cat.accelerator(str(i["device"]))
        each = costs.convert(float(dev.price.purchase or 0.0), dev.price.currency, i["currency"])
        return float(i["count"]) * each, f"{each:,.0f} {i['currency']} each (catalog)"
    if kind == "server_power_range":
        dev = cat.accelerator(str(i["device"]))
        return float(dev.server_power_w or 0.0), f"{dev.devices_per_node}x {dev.id} server"
    if kind in ("catalog_min", "catalog_absent"):
        value = getattr(cat.accelerator(str(i["device"])), str(i["field"]))
        return float(value or 0.0), "absent in catalog" if value is None else ""
    raise ValueError(f"unknown validation kind {kind!r} in row {run.id}")


def _judge(run: Run, pred: float) -> tuple[float | None, bool | None]:
    pub = run.published
    if run.kind == "server_power_range":
        lo, hi = float(pub[0]), float(pub[1])
        return None, lo <= pred <= hi
    if run.kind == "catalog_min":
        return (pred - float(pub)) / float(pub), pred >= float(pub)
    if run.kind == "catalog_absent":
        return None, pred == 0.0
    err = (pred - float(pub)) / float(pub)
    if run.role == "flag":
        return err, abs(err) > 1.0  # "ok" means the inconsistency was detected
    if run.tolerance is not None:
        return err, abs(err) <= float(run.tolerance)
    return err, None


def validate(catalog: Catalog | None = None, params: MfuParams | None = None) -> Report:
    """Predict every published row.

    Args:
        catalog: catalog (default: built-in).
        params: utilisation constants (default: :data:`FITTED`).

    Returns:
        The report with per-row errors and medians.
    """
    cat = catalog if catalog is not None else load_catalog()
    p = params or FITTED
    report = Report(params=p)
    for run in load_runs():
        pred, note = predict(run, cat, p)
        err, ok = _judge(run, pred)
        report.rows.append(Row(run, pred, err, ok, note))
    return report
