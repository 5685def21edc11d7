"""``zhisuan plan train|serve|compare|validate``: compute planning from the command line.

Thin over :mod:`zhisuan.planner`, imported inside the commands. Rich tables by default,
``--json`` for scripts; the flags and JSON keys documented in docs/planner.md are stable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from zhisuan.cli._common import console, fail, user_errors
from zhisuan.cli.catalog import CatalogOpt, catalog, human, parse_amount, pct, plan_model

if TYPE_CHECKING:
    from zhisuan.catalog import ModelArch
    from zhisuan.planner.serve import ServeResult
    from zhisuan.planner.train import TrainRequest, TrainResult

app = typer.Typer(no_args_is_help=True, help="Plan training and serving: time, memory, money.")

ModelOpt = typer.Option(
    ..., "--model", help="Catalog id, HF config.json or GGUF path, or model-store name."
)
DeviceOpt = typer.Option("h100-sxm", "--device", help="Accelerator id (see `catalog devices`).")
JsonOpt = typer.Option(False, "--json", help="Machine-readable output.")
PueOpt = typer.Option(1.2, "--pue", help="Data-centre PUE.")
PowerOpt = typer.Option("tdp", "--power", help="tdp (upper bound) or average.")
PriceOpt = typer.Option(None, "--price-per-hour", help="Price per device-hour (else catalog).")
CurrencyOpt = typer.Option(None, "--currency", help="USD, CNY, EUR (default: catalog's).")


def _dump(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _train_request(
    model: ModelArch,
    tokens: str,
    device: str,
    count: int,
    **kw: Any,
) -> TrainRequest:
    from zhisuan.planner.train import TrainRequest

    batch = kw.pop("batch_tokens")
    return TrainRequest(
        model=model,
        tokens=parse_amount(tokens, "tokens"),
        device=device,
        count=count,
        batch_tokens=None if batch is None else parse_amount(batch, "batch-tokens"),
        **kw,
    )


@app.command("train")
def train(
    model: str = ModelOpt,
    tokens: str = typer.Option(..., "--tokens", help="Training tokens, e.g. 1.4T or 300e9."),
    device: str = DeviceOpt,
    count: int = typer.Option(8, "--count", help="Devices in the job."),
    mfu: float | None = typer.Option(None, "--mfu", help="Override the steady-state MFU."),
    efficiency: float | None = typer.Option(
        None, "--efficiency", help="Override end-to-end efficiency (failures, restarts)."
    ),
    pue: float = PueOpt,
    power: str = PowerOpt,
    avg_power_w: float | None = typer.Option(None, "--avg-power-w", help="W per device."),
    grid_kg_per_kwh: float = typer.Option(0.5703, "--grid-kg-per-kwh", help="Grid CO2 intensity."),
    price_per_hour: float | None = PriceOpt,
    currency: str | None = CurrencyOpt,
    cost_mode: str = typer.Option("rent", "--cost-mode", help="rent or buy (amortised)."),
    precision: str = typer.Option("bf16", "--precision", help="Training precision."),
    seq_len: int | None = typer.Option(None, "--seq-len", help="Sequence length."),
    batch_tokens: str | None = typer.Option(None, "--batch-tokens", help="Global batch (4M)."),
    tp: int | None = typer.Option(None, "--tp", help="Tensor parallel (default: search)."),
    pp: int | None = typer.Option(None, "--pp", help="Pipeline stages (default: search)."),
    zero: int | None = typer.Option(None, "--zero", help="ZeRO stage 0-3 (default: 1, else 3)."),
    recompute: str | None = typer.Option(None, "--recompute", help="none, selective or full."),
    as_json: bool = JsonOpt,
    extra: list[Path] | None = CatalogOpt,
) -> None:
    """Time, GPU-hours, memory, scaling, energy, CO2 and cost of a training run."""
    with user_errors():
        from zhisuan.planner.train import plan_train

        cat = catalog(extra)
        req = _train_request(
            plan_model(model, cat), tokens, device, count, mfu=mfu, efficiency=efficiency,
            pue=pue, power=power, avg_power_w=avg_power_w, grid_kg_per_kwh=grid_kg_per_kwh,
            price_per_hour=price_per_hour, currency=currency, cost_mode=cost_mode,
            precision=precision, seq_len=seq_len, batch_tokens=batch_tokens, tp=tp, pp=pp,
            zero=zero, recompute=recompute,
        )  # fmt: skip
        res = plan_train(req, catalog=cat)
    if as_json:
        _dump(res.to_json())
        return
    _print_train(res)


def _print_train(res: TrainResult) -> None:
    from rich.table import Table

    a = res.assumptions
    table = Table(
        title=f"Training plan: {res.model} on {res.count} x {res.device}", show_header=False
    )
    table.add_column("what", style="bold")
    table.add_column("value")
    cost = "–" if res.cost is None else f"{human(res.cost)} {res.currency} ({a['cost_mode']})"
    rows = [
        ("parameters", f"{a['params_b']:.2f}B (active {a['active_params_b']:.2f}B)"),
        ("compute", f"{human(res.flops)} FLOPs (6·N·D {human(res.flops_6nd)}) = "
         f"{human(res.pf_days)} PF-days"),
        ("layout", res.layout.describe()),
        ("memory / device", f"{res.memory_per_device_gb:.1f} GB of {res.memory_available_gb:.1f}"
         f" GB usable -> {'fits' if res.fits else '[red]does not fit[/]'}"),
        ("steady-state MFU", f"{pct(res.mfu)} (HFU {pct(res.hfu)}; {a['mfu_source']})"),
        ("scaling efficiency", f"{pct(res.scaling_efficiency)} of one node's per-device rate"),
        ("end-to-end efficiency", f"{pct(res.efficiency)} (failures, restarts, checkpoints)"),
        ("wall time", f"{human(res.wall_days)} days"),
        ("device-hours", human(res.gpu_hours)),
        ("energy", f"{human(res.energy_mwh)} MWh ({a['power']} {a['watts_per_device']:g} W "
         f"x PUE {a['pue']})"),
        ("CO2", f"{human(res.co2_t)} t at {a['grid_kg_per_kwh']} kg/kWh"),
        ("cost", cost),
    ]  # fmt: skip
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
    if res.scaling:
        sc = Table(title="A bigger cluster is not proportionally faster (same layout, same batch)")
        for col in ("devices", "wall days", "scaling eff.", "end-to-end eff."):
            sc.add_column(col, justify="right")
        for row in res.scaling:
            mark = " *" if int(row["count"]) == res.count else ""
            sc.add_row(
                f"{int(row['count']):,}{mark}",
                human(row["wall_days"]),
                pct(row["scaling_efficiency"]),
                pct(row["end_to_end_efficiency"]),
            )
        console.print(sc)
    for line in res.advice:
        console.print(f"[yellow]advice:[/] {line}", highlight=False)


@app.command("serve")
def serve(
    model: str = ModelOpt,
    device: str = DeviceOpt,
    count: int | None = typer.Option(None, "--count", help="Devices per replica (TP)."),
    precision: str = typer.Option("bf16", "--precision", help="bf16 fp16 fp8 int8 int4."),
    kv_precision: str = typer.Option("fp16", "--kv-precision", help="fp16 or fp8 KV cache."),
    prompt_tokens: int = typer.Option(1024, "--prompt-tokens", help="Prompt length."),
    output_tokens: int = typer.Option(256, "--output-tokens", help="Output length."),
    concurrency: int | None = typer.Option(None, "--concurrency", help="Concurrent sequences."),
    rate: float | None = typer.Option(None, "--rate", help="Requests per second to serve."),
    ttft_ms: float | None = typer.Option(None, "--ttft-ms", help="TTFT limit."),
    tpot_ms: float | None = typer.Option(None, "--tpot-ms", help="TPOT limit."),
    slo: str | None = typer.Option(
        None, "--slo", help="MLPerf preset: llama2-70b, llama2-70b-interactive, llama3.1-405b."
    ),
    pue: float = PueOpt,
    power: str = PowerOpt,
    price_per_hour: float | None = PriceOpt,
    currency: str | None = CurrencyOpt,
    as_json: bool = JsonOpt,
    extra: list[Path] | None = CatalogOpt,
) -> None:
    """Memory, TTFT/TPOT, throughput, devices for a rate, cost per Mtok, energy per ktok."""
    with user_errors():
        from zhisuan.planner.serve import ServeRequest, plan_serve

        cat = catalog(extra)
        req = ServeRequest(
            model=plan_model(model, cat), device=device, count=count, precision=precision,
            kv_precision=kv_precision, prompt_tokens=prompt_tokens, output_tokens=output_tokens,
            concurrency=concurrency, rate=rate, ttft_ms=ttft_ms, tpot_ms=tpot_ms, slo=slo,
            pue=pue, power=power, price_per_hour=price_per_hour, currency=currency,
        )  # fmt: skip
        res = plan_serve(req, catalog=cat)
    if as_json:
        _dump(res.to_json())
        return
    _print_serve(res)


def _print_serve(res: ServeResult) -> None:
    from rich.table import Table

    a = res.assumptions
    title = f"Serving plan: {res.model} on {res.count} x {res.device} per replica"
    table = Table(title=title, show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    limits = ""
    if a["ttft_limit_ms"] or a["tpot_limit_ms"]:
        limits = f" (limits {a['ttft_limit_ms']} / {a['tpot_limit_ms']} ms)"
    cost = "–" if res.cost_per_mtok is None else f"{res.cost_per_mtok:.3g} {res.currency}"
    rows = [
        ("weights", f"{res.weights_gb:.1f} GB ({a['precision']})"),
        ("KV cache / sequence", f"{res.kv_cache_gb_per_seq:.3f} GB ({a['attention']}, "
         f"{a['prompt_tokens']}+{a['output_tokens']} tokens, {a['kv_precision']})"),
        ("memory", f"{res.memory_available_gb:.0f} GB usable -> "
         f"{'fits' if res.fits else '[red]does not fit[/]'}"),
        ("max concurrency", str(res.max_concurrency)),
        ("at concurrency", str(res.concurrency)),
        ("TTFT / TPOT", f"{res.ttft_ms:.0f} ms / {res.tpot_ms:.1f} ms{limits}"
         f"{'' if res.slo_met else ' [red]limits not met[/]'}"),
        ("decode", f"{res.decode_step_ms:.1f} ms per step, {res.bound}-bound"),
        ("throughput", f"{human(res.tokens_per_s)} output tokens/s per replica"),
        ("devices needed", "–" if res.devices_needed is None else
         f"{res.devices_needed} ({res.replicas} replica(s))"),
        ("cost", f"{cost} per million output tokens"),
        ("energy", f"{res.wh_per_ktok:.3g} Wh per thousand output tokens"),
    ]  # fmt: skip
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
    for line in res.advice:
        console.print(f"[yellow]advice:[/] {line}", highlight=False)


@app.command("compare")
def compare(
    model: str = ModelOpt,
    devices: list[str] = typer.Option(
        ..., "--device", help="Repeat or comma-separate: --device h100,a100-80gb,ascend-910b."
    ),
    tokens: str | None = typer.Option(None, "--tokens", help="Training tokens (train mode)."),
    count: int | None = typer.Option(None, "--count", help="Devices (train) / per replica."),
    prompt_tokens: int = typer.Option(1024, "--prompt-tokens"),
    output_tokens: int = typer.Option(256, "--output-tokens"),
    concurrency: int | None = typer.Option(None, "--concurrency"),
    rate: float | None = typer.Option(None, "--rate"),
    ttft_ms: float | None = typer.Option(None, "--ttft-ms"),
    tpot_ms: float | None = typer.Option(None, "--tpot-ms"),
    precision: str = typer.Option("bf16", "--precision"),
    pue: float = PueOpt,
    power: str = PowerOpt,
    currency: str = typer.Option("USD", "--currency", help="Common currency for the table."),
    as_json: bool = JsonOpt,
    extra: list[Path] | None = CatalogOpt,
) -> None:
    """One workload on several accelerators side by side (train with --tokens, else serve)."""
    names = [d.strip() for item in devices for d in item.split(",") if d.strip()]
    if not names:
        fail("give at least one --device", "e.g. --device h100-sxm,a100-80gb")
    with user_errors():
        cat = catalog(extra)
        arch = plan_model(model, cat)
        out: list[dict[str, Any]] = []
        if tokens is not None:
            from zhisuan.planner.train import plan_train

            for name in names:
                req = _train_request(
                    arch, tokens, name, count or 8, pue=pue, power=power, currency=currency,
                    precision=precision, batch_tokens=None, scaling=False,
                )  # fmt: skip
                out.append(plan_train(req, catalog=cat).to_json())
        else:
            from zhisuan.planner.serve import ServeRequest, plan_serve

            for name in names:
                sreq = ServeRequest(
                    model=arch, device=name, count=count, precision=precision,
                    prompt_tokens=prompt_tokens, output_tokens=output_tokens,
                    concurrency=concurrency, rate=rate, ttft_ms=ttft_ms, tpot_ms=tpot_ms,
                    pue=pue, power=power, currency=currency,
                )  # fmt: skip
                out.append(plan_serve(sreq, catalog=cat).to_json())
    if as_json:
        _dump(out)
        return
    _print_compare(out, train=tokens is not None)


def _print_compare(rows: list[dict[str, Any]], *, train: bool) -> None:
    from rich.table import Table

    cols: tuple[str, ...]
    if train:
        cols = ("device", "count", "fits", "MFU", "wall days", "GPU-hours", "MWh", "cost")
        table = Table(title=f"Training {rows[0]['model']}: one workload, several accelerators")
        for col in cols:
            table.add_column(col, justify="left" if col == "device" else "right")
        for r in rows:
            table.add_row(
                r["device"], str(r["count"]), "yes" if r["fits"] else "[red]no[/]", pct(r["mfu"]),
                human(r["wall_days"]), human(r["gpu_hours"]), human(r["energy_mwh"]),
                "–" if r["cost"] is None else f"{human(r['cost'])} {r['currency']}",
            )  # fmt: skip
    else:
        cols = ("device", "per replica", "fits", "TTFT ms", "TPOT ms", "tok/s", "devices",
                "cost/Mtok", "Wh/ktok")  # fmt: skip
        table = Table(title=f"Serving {rows[0]['model']}: one workload, several accelerators")
        for col in cols:
            table.add_column(col, justify="left" if col == "device" else "right")
        for r in rows:
            cost = "–" if r["cost_per_mtok"] is None else f"{r['cost_per_mtok']:.3g}"
            table.add_row(
                r["device"], str(r["count"]), "yes" if r["fits"] else "[red]no[/]",
                f"{r['ttft_ms']:.0f}", f"{r['tpot_ms']:.1f}", human(r["tokens_per_s"]),
                "–" if r["devices_needed"] is None else str(r["devices_needed"]),
                f"{cost} {r['currency']}", f"{r['wh_per_ktok']:.3g}",
            )  # fmt: skip
    console.print(table)


@app.command("validate")
def validate(
    refit: bool = typer.Option(False, "--refit", help="Re-run the calibration fit first."),
    as_json: bool = JsonOpt,
) -> None:
    """Compare the planner with published runs and the background articles' figures."""
    with user_errors():
        from zhisuan.planner.validate import validate as run_validation

        params = None
        if refit:
            from zhisuan.planner.fit import fit

            params = fit()
        report = run_validation(params=params)
    if as_json:
        _dump(report.to_json())
        return
    from rich.table import Table

    table = Table(title="Planner vs published figures")
    table.add_column("row", no_wrap=True)
    table.add_column("role", no_wrap=True)
    for col in ("predicted", "published", "error"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("unit / ok")
    for row in report.rows:
        run = row.run
        pub = run.published
        pub_s = f"{pub[0]:g}–{pub[1]:g}" if isinstance(pub, list) else human(float(pub))
        err = "–" if row.error is None else f"{row.error * 100:+.1f}%"
        ok = {True: "[green]ok[/]", False: "[red]FAIL[/]", None: ""}[row.ok]
        if run.role == "flag" and row.ok:
            ok = "[yellow]flagged[/]"
        role = "calib" if run.role == "calibration" else run.role
        table.add_row(run.id, role, human(row.predicted), pub_s, err, f"{run.unit} {ok}".strip())
    console.print(table)
    for row in report.rows:
        if row.run.role == "flag":
            console.print(f"[yellow]{row.run.id}:[/] {row.note}", highlight=False)
    from zhisuan.planner.fit import calibration_runs

    p = report.params
    cal = [r.id for r in calibration_runs()]
    console.print(
        f"utilisation model fitted on ({len(cal)}): {', '.join(cal)}; every other "
        "model-dependent row is a test row\n"
        f"fitted constants: u_max={p.u_max}, c_kernel={p.c_kernel}, k_comm={p.k_comm}\n"
        f"median |error|: calibration {pct(report.median_calibration_error)}, "
        f"[bold]test {pct(report.median_test_error)}[/] over {len(report.errors('test'))} "
        "test rows (no per-row tuning)",
        highlight=False,
    )
