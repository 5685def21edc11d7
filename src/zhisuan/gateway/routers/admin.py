"""The admin API (``/admin/…``): replicas and deployments."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from zhisuan.gateway._deployments import desired_specs
from zhisuan.gateway._serving import gateway_of

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get("/replicas")
async def replicas(request: Request) -> list[dict[str, Any]]:
    """Every replica with its state, pid, device, endpoint, uptime and restarts."""
    gw = gateway_of(request)
    return [r.snapshot() for r in gw.backend.replicas()]


@router.post("/reconcile")
async def reconcile(request: Request) -> list[dict[str, Any]]:
    """Start and stop replicas to match the stored deployments (after ``zhisuan deploy``)."""
    gw = gateway_of(request)
    await gw.backend.apply(desired_specs(gw.store))
    return [r.snapshot() for r in gw.backend.replicas()]
