"""``zhisuan catalog devices|models|show``: the accelerator and model catalog.

Also holds the small helpers ``zhisuan plan`` shares (catalog loading with the user's overrides,
number parsing and formatting). Heavy modules are imported inside the commands so both command
groups answer in well under 300 ms.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from zhisuan.cli._common import console, user_errors
from zhisuan.errors import InvalidParameter, ZhisuanError

if TYPE_CHECKING:
    from zhisuan.catalog import Catalog, ModelArch
    from zhisuan.store import Model

log = logging.getLogger(__name__)

app = typer.Typer(no_args_is_help=True, help="Accelerators and model architectures.")

CatalogOpt = typer.Option(
    None, "--catalog", help="Extra catalog YAML file(s) merged over the built-in one."
)

_SUFFIX = {"K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12, "P": 1e15}


def zhisuan_home() -> Path:
    """The data directory, resolved exactly as :class:`zhisuan.settings.Settings` does.

    Building ``Settings`` imports pydantic-settings (~250 ms), which alone would exceed the
    planner's latency budget, so the CLI reads the same variable with the same default.
    """
    return Path(os.environ.get("ZHISUAN_HOME") or Path.home() / ".zhisuan").expanduser()


def catalog(extra: list[Path] | None = None) -> Catalog:
    """The catalog with ``$ZHISUAN_HOME/catalog/*.yaml`` and ``--catalog`` files merged in."""
    from zhisuan.catalog import load_catalog

    return load_catalog(home=zhisuan_home(), extra_paths=list(extra or []))


def stored_model(name: str) -> Model | None:
    """The model-store model called ``name``, or None (also without a store to look in)."""
    home = zhisuan_home()
    url = os.environ.get("ZHISUAN_DATABASE_URL", "")
    if not url and not (home / "zhisuan.db").exists():
        return None
    try:
        from zhisuan.settings import Settings
        from zhisuan.store import open_store

        with open_store(Settings()) as store:
            return store.find_model(name)
    except (ImportError, ZhisuanError) as exc:
        log.debug("model store lookup for %s failed: %s", name, exc)
        return None


def plan_model(name: str, cat: Catalog) -> ModelArch:
    """The architecture ``--model NAME`` names: a catalog id or alias, an HF ``config.json``
    or model directory, a GGUF file, or a model in the model store (an HF directory or a GGUF
    file; consulted on a catalog miss), as :meth:`zhisuan.catalog.Catalog.model` reads them
    (a GGUF file's shape from its metadata).

    Raises:
        NotFound: none of these; ``suggestions`` holds the closest catalog ids.
        InvalidParameter: a file the planner cannot read the shape from.
        ImportRefused: a damaged GGUF file.
    """

    def store_path(store_name: str) -> Path | None:
        found = stored_model(store_name)
        return None if found is None else Path(found.path)

    return cat.model(name, resolver=store_path)


def parse_amount(text: str, name: str) -> float:
    """Parse ``1.4T``, ``300e9``, ``2,048`` or ``4M`` into a float.

    Args:
        text: user input.
        name: flag name for the error.

    Returns:
        The number.

    Raises:
        InvalidParameter: not a finite number.
    """
    raw = text.strip().replace(",", "").replace("_", "")
    factor = 1.0
    if raw and raw[-1].upper() in _SUFFIX:
        factor = _SUFFIX[raw[-1].upper()]
        raw = raw[:-1]
    try:
        value = float(raw) * factor
    except ValueError:
        value = math.nan
    if not math.isfinite(value):  # nan, inf and 1e400 parse as floats
        raise InvalidParameter(
            f"--{name} expects a finite number such as 1.4T, 300e9 or 2048, got {text!r}",
            param=name.replace("-", "_"),
        )
    return value


def human(value: float | None, unit: str = "", digits: int = 3) -> str:
    """Compact human number: 3.14e23, 1,287, 0.462, 12.3k."""
    if value is None:
        return "–"
    mag = abs(value)
    if mag >= 1e7 or (0 < mag < 1e-3):
        text = f"{value:.{digits - 1}e}"
    elif mag >= 1000:
        text = f"{value:,.0f}"
    elif mag >= 100:
        text = f"{value:.0f}"
    elif mag >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.{digits - 1}f}" if mag >= 1 else f"{value:.{digits}f}"
    return f"{text} {unit}".rstrip()


def pct(value: float | None) -> str:
    """``0.462`` -> ``46.2%``."""
    return "–" if value is None else f"{value * 100:.1f}%"


def _dump(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


@app.command("devices")
def devices(
    vendor: str | None = typer.Option(None, "--vendor", help="Only this vendor."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    extra: list[Path] | None = CatalogOpt,
) -> None:
    """List accelerators: peak rates, memory, bandwidth, power, indicative price, confidence."""
    with user_errors():
        cat = catalog(extra)
        rows = [
            a for a in cat.accelerators.values() if not vendor or a.vendor.lower() == vendor.lower()
        ]
        if as_json:
            _dump([a.to_dict() for a in rows])
            return
        from rich.table import Table

        table = Table(title="Accelerators (dense TFLOPS; prices indicative)")
        for col in ("id", "vendor", "FP64", "FP32", "BF16/FP16", "FP8", "INT8", "GB", "TB/s"):
            table.add_column(col, justify="left" if col in ("id", "vendor") else "right")
        for col in ("link GB/s", "TDP W", "rent/h", "confidence"):
            table.add_column(col, justify="right" if col != "confidence" else "left")
        for a in rows:
            price = "–" if a.price.hourly is None else f"{a.price.hourly:g} {a.price.currency}"
            table.add_row(
                a.id,
                a.vendor,
                human(a.fp64),
                human(a.fp32),
                human(a.bf16 or a.fp16),
                human(a.fp8),
                human(a.int8),
                f"{a.memory_gb:g}",
                f"{a.memory_bw_tbs:g}",
                f"{a.interconnect_gbs:g}",
                f"{a.tdp_w:g}",
                price,
                a.confidence.split(":")[0].split(" ")[0],
            )
        console.print(table)


@app.command("models")
def models(
    family: str | None = typer.Option(None, "--family", help="Only this family."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    extra: list[Path] | None = CatalogOpt,
) -> None:
    """List model architectures with parameter counts computed from the architecture."""
    with user_errors():
        cat = catalog(extra)
        rows = [m for m in cat.models.values() if not family or m.family == family.lower()]
        if as_json:
            _dump([m.to_dict() for m in rows])
            return
        from rich.table import Table

        table = Table(title="Model architectures (parameters computed from the shape)")
        for col in ("id", "params", "active", "published", "layers", "hidden", "heads/kv"):
            table.add_column(col, justify="left" if col == "id" else "right")
        table.add_column("attention")
        table.add_column("KV/token")
        for m in rows:
            table.add_row(
                m.id,
                f"{m.params / 1e9:.2f}B",
                f"{m.active_params / 1e9:.2f}B",
                "–" if m.published_params_b is None else f"{m.published_params_b:g}B",
                str(m.layers),
                str(m.hidden),
                f"{m.heads}/{m.kv_heads}",
                m.attention_kind,
                f"{m.kv_bytes_per_token(2.0) / 1024:.0f} KiB",
            )
        console.print(table)


@app.command("show")
def show(
    name: str = typer.Argument(
        ..., help="Device or model id, alias, config.json or GGUF path, or model-store name."
    ),
    extra: list[Path] | None = CatalogOpt,
) -> None:
    """Show one catalog entry (device or model) with its source and confidence, as JSON."""
    with user_errors():
        cat = catalog(extra)
        try:
            _dump(cat.accelerator(name).to_dict())
        except ZhisuanError:
            _dump(plan_model(name, cat).to_dict())
