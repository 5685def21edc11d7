"""``POST /v1/plan/train`` and ``POST /v1/plan/serve``: the compute planner over HTTP.

Thin: parse the body, call :mod:`zhisuan.planner`, return ``result.to_json()``. A model is
a catalog id: a path on the server is refused here, and a bare name is looked up in the
catalog only, never as a file or directory where the server runs (any caller with a key could
otherwise probe the server's files; ``zhisuan plan`` reads local paths). Bad input
raises :mod:`zhisuan.errors` exceptions (``PlanError`` 400, ``NotFound`` 404 with suggestions),
which the gateway maps to OpenAI error bodies. The catalog comes from the :func:`get_catalog`
dependency; the app overrides it to merge ``$ZHISUAN_HOME/catalog/*.yaml``::

    app.dependency_overrides[get_catalog] = lambda: load_catalog(home=settings.home)
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from zhisuan.catalog import Catalog, load_catalog
from zhisuan.planner.serve import ServeRequest, plan_serve
from zhisuan.planner.train import TrainRequest, plan_train

router = APIRouter(prefix="/v1/plan", tags=["plan"])


def _no_path(model: str) -> str:
    """A catalog id, not a path (the catalog would read a file on the server)."""
    if any(c in model for c in "/\\") or model.startswith(("~", ".")) or model.endswith(".json"):
        raise ValueError(
            "the planner API takes a catalog id (`zhisuan catalog models` lists them), not a "
            "path on the server; `zhisuan plan` reads local files"
        )
    return model


ModelId = Annotated[str, AfterValidator(_no_path)]


def get_catalog() -> Catalog:
    """The catalog used by the planner endpoints (built-in unless the app overrides this)."""
    return load_catalog()


class TrainBody(BaseModel):
    """Body of ``POST /v1/plan/train``; fields mirror ``zhisuan plan train`` flags."""

    model_config = ConfigDict(extra="forbid")

    model: ModelId = Field(description="catalog id")
    tokens: float = Field(description="training tokens")
    device: str = "h100-sxm"
    count: int = 8
    mfu: float | None = None
    efficiency: float | None = None
    pue: float = 1.2
    power: Literal["tdp", "average"] = "tdp"
    avg_power_w: float | None = None
    grid_kg_per_kwh: float = 0.5703
    price_per_hour: float | None = None
    currency: str | None = None
    cost_mode: Literal["rent", "buy"] = "rent"
    precision: str = "bf16"
    seq_len: int | None = None
    batch_tokens: float | None = None
    tp: int | None = None
    pp: int | None = None
    zero: int | None = None
    recompute: Literal["none", "selective", "full"] | None = None


class ServeBody(BaseModel):
    """Body of ``POST /v1/plan/serve``; fields mirror ``zhisuan plan serve`` flags."""

    model_config = ConfigDict(extra="forbid")

    model: ModelId = Field(description="catalog id")
    device: str = "h100-sxm"
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
    pue: float = 1.2
    power: Literal["tdp", "average"] = "tdp"
    avg_power_w: float | None = None
    price_per_hour: float | None = None
    currency: str | None = None


@router.post("/train")
async def plan_train_endpoint(
    body: TrainBody, catalog: Catalog = Depends(get_catalog)
) -> dict[str, Any]:
    """Plan a training run: FLOPs, MFU, wall days, GPU-hours, memory, energy, CO2, cost."""
    model = catalog.model(body.model, paths=False)  # never a file of the server's
    return plan_train(
        TrainRequest(**{**body.model_dump(), "model": model}), catalog=catalog
    ).to_json()


@router.post("/serve")
async def plan_serve_endpoint(
    body: ServeBody, catalog: Catalog = Depends(get_catalog)
) -> dict[str, Any]:
    """Plan serving: weights, KV cache, concurrency, TTFT/TPOT, devices, cost, energy."""
    model = catalog.model(body.model, paths=False)  # never a file of the server's
    return plan_serve(
        ServeRequest(**{**body.model_dump(), "model": model}), catalog=catalog
    ).to_json()
