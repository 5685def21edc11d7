"""``GET /v1/usage``: a tenant reads its own usage (never another tenant's)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Query, Request

from zhisuan.gateway._admission import principal_of
from zhisuan.gateway._serving import gateway_of

router = APIRouter(prefix="/v1", tags=["usage"])


@router.get("/usage", response_model=None)
def own_usage(
    request: Request,
    since: datetime | None = None,
    until: datetime | None = None,
    model: str | None = None,
    by: Literal["model", "key", "day"] | None = None,
    limit: int = Query(default=1000, ge=1, le=100_000),
) -> list[dict[str, Any]]:
    """The calling tenant's usage records, or a summary ``by`` model, key or day."""
    tenant = principal_of(request).tenant
    gw = gateway_of(request)
    gw.meter.sync()  # what this gateway has recorded so far, stored
    store = gw.store
    if by is not None:
        return store.usage_summary(by=by, tenant=tenant, since=since, until=until, model=model)
    rows = store.query_usage(tenant=tenant, model=model, since=since, until=until, limit=limit)
    return [r.to_dict() for r in rows]
