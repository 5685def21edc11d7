"""The admin API (``/admin/…``, admin key): tenants, keys, deployments, usage, replicas.

Thin: each route validates its body and calls the store; changes that a gateway caches
(keys, limits, deployments) are applied at once by :func:`_refresh`. Errors carry the hint
the CLI prints for the same mistake (:mod:`zhisuan.gateway.routers._admin_errors`). A body
with limits reads a budget as the decimal the client wrote (:class:`_AdminRoute`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import AllowInfNan, BaseModel, ConfigDict, Field, WithJsonSchema, field_validator
from starlette.responses import Response

from zhisuan.cluster import listing
from zhisuan.engines.options import check_deployment, check_values
from zhisuan.errors import InvalidParameter
from zhisuan.gateway._context import Gateway
from zhisuan.gateway._deployments import desired_specs
from zhisuan.gateway._serving import gateway_of
from zhisuan.gateway.routers._admin_errors import RESPONSES, HintedRoute
from zhisuan.limits import written_amount
from zhisuan.modelstore import validate_name
from zhisuan.store import BUDGET_STEP, MAX_REPLICAS, MAX_WEIGHT, MONEY_PLACES, tenant_currency

# Bounds that the store checks, as for the CLI, so that a refusal carries the CLI's hint;
# the schema states them all the same. A budget is the decimal the client wrote (see
# _AdminRoute), non-finite ones included, which the store refuses with its hint.
_Count = Annotated[int, WithJsonSchema({"type": "integer", "minimum": 1})]
_Money = Annotated[
    Decimal, AllowInfNan(), WithJsonSchema({"type": "number", "exclusiveMinimum": 0})
]
_Replicas = Annotated[
    int, WithJsonSchema({"type": "integer", "minimum": 1, "maximum": MAX_REPLICAS})
]
_Weight = Annotated[int, WithJsonSchema({"type": "integer", "minimum": 1, "maximum": MAX_WEIGHT})]
_WEIGHT = (
    "Requests of the tenant started per turn in a replica's queue, where the tenants with "
    "requests waiting take turns (1, the default, is an even share)."
)


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rpm: _Count | None = None
    tpm: _Count | None = None
    tokens_per_day: _Count | None = None
    budget: _Money | None = Field(
        default=None,
        description=f"Money per calendar month, in steps of {BUDGET_STEP:.{MONEY_PLACES}f} "
        f"(at most {MONEY_PLACES} decimal places: a budget is kept to them).",
    )
    max_concurrent: _Count | None = None
    models: list[str] | None = None


class TenantIn(Limits):
    name: str = Field(min_length=1, max_length=64)
    currency: str | None = Field(default=None, min_length=3, max_length=8)
    weight: _Weight = Field(default=1, description=_WEIGHT)


class TenantChange(Limits):
    """A change of a tenant: the fields given change, a null limit is cleared (unlimited)
    and a null weight is the default, 1."""

    weight: _Weight | None = Field(default=None, description=f"{_WEIGHT} Null: 1.")


class KeyIn(Limits):
    tenant: str | None = Field(default=None, max_length=64)
    admin: bool = False
    name: str | None = Field(default=None, max_length=128)
    expires_at: datetime | None = None


class KeyChange(Limits):
    name: str | None = Field(default=None, max_length=128)
    expires_at: datetime | None = None


class _ExactJson(Request):
    """A request whose JSON body keeps each number with a fraction or an exponent as the
    decimal written (:func:`~zhisuan.limits.written_amount`), where ``json`` makes a float
    of it: ``1.00000000000000001`` would be 1.0, a budget of whole steps."""

    async def json(self) -> Any:
        if not hasattr(self, "_exact"):
            self._exact = json.loads(await self.body(), parse_float=written_amount)
        return self._exact


class _AdminRoute(HintedRoute):
    """An admin route (errors with their hint); one whose body carries limits reads it with
    :class:`_ExactJson`, so that the store judges a budget as the client wrote it. Other
    bodies keep floats: a deployment's options are stored as JSON, where a decimal is not."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        body = None if self.body_field is None else self.body_field.field_info.annotation
        if not (isinstance(body, type) and issubclass(body, Limits)):
            return handler

        async def exact(request: Request) -> Response:
            return await handler(_ExactJson(request.scope, request.receive))

        return exact


router = APIRouter(prefix="/admin", tags=["admin"], route_class=_AdminRoute, responses=RESPONSES)


class DeploymentIn(BaseModel):
    """A deployment, or the change of one: a field left out (or null) keeps its current
    value, else takes its default (the engine by the model's format, cpu, one replica);
    ``options`` are merged into the current ones, and a null option removes it."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=64)
    engine: Literal["transformers", "llamacpp", "upstream"] | None = None
    device: str | None = Field(default=None, pattern=r"^(cpu|cuda:\d+)$")
    replicas: _Replicas | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("options")
    @classmethod
    def _known_values(cls, options: dict[str, Any]) -> dict[str, Any]:
        check_values(options)
        return options


async def _refresh(gw: Gateway) -> None:
    """Apply store changes: reload keys and limits, drop the quota state of deleted tenants
    and revoked keys, reconcile replicas."""
    auth = gw.extras.get("auth")
    if auth is not None:
        auth.clear()
    ledger = gw.extras.get("ledger")
    if ledger is not None:
        tenants = {f"tenant:{t.name}" for t in gw.store.list_tenants()}
        keys = {f"key:{k.prefix}" for k in gw.store.list_keys() if k.status() == "active"}
        idle = ledger.retain(tenants | keys)
        if idle:  # forgotten once their records are stored, which a new baseline reads
            await asyncio.to_thread(gw.meter.sync)
            ledger.drop(idle)
    await gw.backend.apply(desired_specs(gw.store))


@router.get("/replicas")
async def replicas(request: Request) -> list[dict[str, Any]]:
    """Every replica with its state, pid, device, endpoint, uptime and restarts, each
    followed by its old workers still finishing their requests (``draining``)."""
    return [r.snapshot() for r in listing(gateway_of(request).backend)]


@router.post("/reconcile")
async def reconcile(request: Request) -> list[dict[str, Any]]:
    """Reload keys, limits and deployments from the store (after CLI changes)."""
    gw = gateway_of(request)
    await _refresh(gw)
    return [r.snapshot() for r in listing(gw.backend)]


@router.get("/tenants")
def list_tenants(request: Request) -> list[dict[str, Any]]:
    """Every tenant with its limits."""
    return [t.to_dict() for t in gateway_of(request).store.list_tenants()]


@router.post("/tenants", status_code=201)
def create_tenant(request: Request, body: TenantIn) -> dict[str, Any]:
    """Create a tenant with its limits."""
    data = body.model_dump()
    name = data.pop("name")
    gw = gateway_of(request)
    data["currency"] = tenant_currency(data["currency"], gw.settings.currency)
    return gw.store.create_tenant(name, **data).to_dict()


@router.get("/tenants/{name}")
def show_tenant(request: Request, name: str) -> dict[str, Any]:
    """One tenant, with its use so far (tokens today, money this month, in flight)."""
    gw = gateway_of(request)
    out = gw.store.get_tenant(name).to_dict()
    ledger = gw.extras.get("ledger")
    if ledger is not None:
        out["live"] = ledger.snapshot(f"tenant:{name}")
    return out


@router.patch("/tenants/{name}")
async def update_tenant(request: Request, name: str, body: TenantChange) -> dict[str, Any]:
    """Change a tenant's limits or weight (fields left out keep their value)."""
    gw = gateway_of(request)
    tenant = gw.store.update_tenant(name, **body.model_dump(exclude_unset=True))
    await _refresh(gw)
    return tenant.to_dict()


@router.delete("/tenants/{name}")
async def delete_tenant(request: Request, name: str) -> dict[str, Any]:
    """Delete a tenant: its keys are revoked at once; its usage records stay, and its name
    can be created again."""
    gw = gateway_of(request)
    tenant, revoked = gw.store.delete_tenant(name)
    await _refresh(gw)
    return {**tenant.to_dict(), "keys_revoked": revoked}


@router.get("/keys")
def list_keys(request: Request, tenant: str | None = None) -> list[dict[str, Any]]:
    """Keys (prefix, tenant, limits, status; never the secret)."""
    return [k.to_dict() for k in gateway_of(request).store.list_keys(tenant)]


@router.post("/keys", status_code=201)
def create_key(request: Request, body: KeyIn) -> dict[str, Any]:
    """Create a key; the secret is in the answer once and never again."""
    row, secret = gateway_of(request).store.create_key(**body.model_dump())
    return {**row.to_dict(), "key": secret}


@router.patch("/keys/{prefix}")
async def update_key(request: Request, prefix: str, body: KeyChange) -> dict[str, Any]:
    """Change a key's limits, allow-list, expiry or name (fields left out keep their
    value; null clears one)."""
    gw = gateway_of(request)
    row = gw.store.update_key(prefix, **body.model_dump(exclude_unset=True))
    await _refresh(gw)
    return row.to_dict()


@router.delete("/keys/{prefix}")
async def revoke_key(request: Request, prefix: str) -> dict[str, Any]:
    """Revoke a key (at once on this gateway)."""
    gw = gateway_of(request)
    row = gw.store.revoke_key(prefix)
    await _refresh(gw)
    return row.to_dict()


@router.get("/deployments")
def list_deployments(request: Request) -> list[dict[str, Any]]:
    """The stored deployments."""
    return [d.to_dict() for d in gateway_of(request).store.list_deployments()]


@router.post("/deployments", status_code=201)
async def put_deployment(request: Request, body: DeploymentIn) -> dict[str, Any]:
    """Deploy a model, or change its deployment (what the body leaves out is kept, see
    :class:`DeploymentIn`); replicas start at once."""
    gw = gateway_of(request)
    if body.engine == "upstream" and gw.store.find_deployment(body.model) is None:
        try:
            validate_name(body.model)  # a new served name keeps the rule of model names
        except InvalidParameter as exc:
            raise InvalidParameter(exc.message, param="model", hint=exc.hint) from None
    given = {name for name, value in body.options.items() if value is not None}
    dep = gw.store.deploy(
        body.model,
        engine=body.engine,
        device=body.device,
        replicas=body.replicas,
        options=body.options,
        check=lambda engine, options: _check_deployment(engine, options, given),
    )
    await _refresh(gw)
    return dep.to_dict()


def _check_deployment(engine: str, options: dict[str, Any], given: set[str]) -> None:
    """The options to store (``given`` in the body, the others kept) are ``engine``'s."""
    check_deployment(
        engine,
        options,
        given,
        param="options",
        remove=lambda name: f'send "options": {{"{name}": null}} to remove it',
    )


@router.delete("/deployments/{model}")
async def remove_deployment(request: Request, model: str) -> dict[str, Any]:
    """Undeploy a model; its replicas stop."""
    gw = gateway_of(request)
    dep = gw.store.remove_deployment(model)
    await _refresh(gw)
    return dep.to_dict()


@router.get("/usage", response_model=None)
def usage(
    request: Request,
    tenant: str | None = None,
    model: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    by: Literal["model", "key", "day", "tenant"] | None = None,
    limit: int = Query(default=1000, ge=1, le=100_000),
) -> list[dict[str, Any]]:
    """Usage records (newest last), or a summary ``by`` model, key, day or tenant."""
    gw = gateway_of(request)
    gw.meter.sync()  # what this gateway has recorded so far, stored
    store = gw.store
    if by is not None:
        return store.usage_summary(by=by, tenant=tenant, since=since, until=until, model=model)
    rows = store.query_usage(tenant=tenant, model=model, since=since, until=until, limit=limit)
    return [r.to_dict() for r in rows]
