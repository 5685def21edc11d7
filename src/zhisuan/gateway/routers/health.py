"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from zhisuan.cluster import ReplicaState
from zhisuan.gateway._serving import gateway_of

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    """The gateway process answers (liveness)."""
    return {"status": "ok"}


@router.get("/ready", response_model=None)
async def ready(request: Request) -> JSONResponse:
    """200 when every deployed model has at least one ready replica, else 503."""
    gw = gateway_of(request)
    models: dict[str, dict[str, Any]] = {}
    for r in gw.backend.replicas():
        entry = models.setdefault(r.spec.model, {"ready": 0, "replicas": 0})
        entry["replicas"] += 1
        entry["ready"] += r.state is ReplicaState.READY
    ok = all(m["ready"] > 0 for m in models.values())
    return JSONResponse(
        {"status": "ready" if ok else "starting", "models": models},
        status_code=200 if ok else 503,
    )


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus metrics: requests, tokens, latency histograms, replicas and their queues,
    cost, energy."""
    gw = gateway_of(request)
    await gw.meter.metrics.poll(gw.client)  # what the replicas run and queue now
    gw.meter.flush()  # the requests that ended in the last moments too
    return Response(generate_latest(gw.meter.metrics.registry), media_type=CONTENT_TYPE_LATEST)
