"""Repository methods for tenants, mixed into :class:`zhisuan.store.Store`.

A tenant is deleted, not removed: :meth:`TenantStoreMixin.delete_tenant` revokes its keys
and sets ``deleted_at``, which leaves it out of lists and lookups. Its keys stay (revoked),
and its usage records name it, so its history can still be read, and creating a tenant of
that name again brings the row back with new limits (the month's use still counts).
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from zhisuan.errors import InvalidParameter, NotFound, UserError, closest
from zhisuan.store._share_checks import (
    apply_limits,
    as_utc,
    check_currency,
    check_tenant_name,
    check_weight,
)
from zhisuan.store._share_models import LIMIT_FIELDS, ApiKey, Tenant
from zhisuan.store._usage_store import UsageStoreMixin
from zhisuan.store.models import utcnow

log = logging.getLogger(__name__)

TENANT_FIELDS = (*LIMIT_FIELDS, "models", "currency", "weight")
"""What :meth:`TenantStoreMixin.update_tenant` changes."""


class TenantStoreMixin(UsageStoreMixin):
    """Tenants (and, through :class:`UsageStoreMixin`, usage records)."""

    def create_tenant(
        self,
        name: str,
        *,
        rpm: int | None = None,
        tpm: int | None = None,
        tokens_per_day: int | None = None,
        budget: float | Decimal | None = None,
        max_concurrent: int | None = None,
        models: list[str] | None = None,
        currency: str = "USD",
        weight: int = 1,
    ) -> Tenant:
        """Create a tenant.

        Args:
            name: lowercase letters, digits and ``-_.``, at most 64 characters; not
                ``"anonymous"`` or ``"admin"`` (the names recorded when auth is off and for
                admin keys).
            rpm, tpm, tokens_per_day, budget, max_concurrent: limits (None = unlimited);
                ``budget`` is money per calendar month in ``currency``, at most 6 decimal
                places (a :class:`~decimal.Decimal` is judged digit for digit).
            models: the model allow-list (None = every model).
            currency: ISO 4217 code, e.g. ``"USD"``, ``"CNY"``.
            weight: requests started per turn in a replica's queue, 1 to 100
                (``zhisuan.engines._turns``).

        Returns:
            The stored tenant.

        Raises:
            InvalidParameter: a malformed name, currency or allow-list, a limit ≤ 0, or a
                weight outside 1-100.
            UserError: a tenant with this name already exists.

        A deleted tenant's name may be taken again: the tenant comes back with the limits
        given here and no key (its old keys stay revoked); its usage records name it, so
        this month's use counts against the new budget.
        """
        check_tenant_name(name)
        fresh = Tenant(name=name, currency=check_currency(currency), weight=check_weight(weight))
        apply_limits(fresh, {**limit_kwargs(locals()), "models": models})
        try:
            with self.session_factory() as s, s.begin():
                row = s.scalar(select(Tenant).where(Tenant.name == name).with_for_update())
                if row is None:
                    s.add(row := fresh)
                elif row.deleted_at is None:
                    raise _tenant_taken(name)
                else:  # a deleted tenant's name comes back, with the limits given now
                    for field in TENANT_FIELDS:
                        setattr(row, field, getattr(fresh, field))
                    row.deleted_at, row.created_at = None, utcnow()
        except IntegrityError as exc:  # lost a race with another creator
            raise _tenant_taken(name) from exc
        log.info("created tenant %s", name)
        return row

    def update_tenant(self, name: str, **changes: Any) -> Tenant:
        """Change some of a tenant's limits or its weight; only the arguments given are
        touched.

        Args:
            name: the tenant.
            **changes: any of ``rpm``, ``tpm``, ``tokens_per_day``, ``budget``,
                ``max_concurrent``, ``models``, ``currency``, ``weight``; ``None`` clears a
                limit (unlimited) or the allow-list (every model), and puts the weight
                back to 1.

        Returns:
            The updated tenant.

        Raises:
            NotFound: no such tenant.
            InvalidParameter: an unknown field, a limit ≤ 0, a malformed currency or list, a
                weight outside 1-100.
        """
        unknown = sorted(set(changes) - set(TENANT_FIELDS))
        if unknown:
            raise InvalidParameter(
                f"unknown tenant field {unknown[0]!r}",
                param=unknown[0],
                hint=f"choose from: {', '.join(TENANT_FIELDS)}",
            )
        if "currency" in changes:
            changes["currency"] = check_currency(changes["currency"])
        if "weight" in changes:  # None: back to the default
            given = changes["weight"]
            changes["weight"] = 1 if given is None else check_weight(given)
        with self.session_factory() as s, s.begin():
            row = tenant_row(s, name, lock=True)
            apply_limits(row, changes)
        log.info("updated tenant %s: %s", name, ", ".join(sorted(changes)) or "nothing")
        return row

    def get_tenant(self, name: str, *, deleted: bool = False) -> Tenant:
        """The tenant called ``name`` (a deleted one too with ``deleted``).

        Raises:
            NotFound: no such tenant (``suggestions`` holds close names), or it was deleted.
        """
        with self.session_factory() as s:
            return tenant_row(s, name, deleted=deleted)

    def list_tenants(self) -> list[Tenant]:
        """Every tenant not deleted, ordered by name."""
        with self.session_factory() as s:
            query = select(Tenant).where(Tenant.deleted_at.is_(None)).order_by(Tenant.name)
            return list(s.scalars(query))

    def delete_tenant(self, name: str) -> tuple[Tenant, int]:
        """Delete tenant ``name``: revoke its keys and leave it out of lists and lookups.

        Its usage records stay (``zhisuan usage --tenant NAME`` reads them), and so do its
        keys, revoked, as every key does once revoked.

        Returns:
            The tenant, with ``deleted_at`` set, and the number of keys it revoked.

        Raises:
            NotFound: no such tenant, or it was deleted already.
        """
        with self.session_factory() as s, s.begin():
            row = tenant_row(s, name, lock=True)
            row.deleted_at = now = utcnow()
            active = select(ApiKey).where(ApiKey.tenant_id == row.id, ApiKey.revoked_at.is_(None))
            keys = list(s.scalars(active.with_for_update(of=ApiKey)))
            for key in keys:
                key.revoked_at = now
        log.info("deleted tenant %s; revoked %d key(s)", name, len(keys))
        return row, len(keys)


def limit_kwargs(scope: dict[str, Any]) -> dict[str, Any]:
    return {f: scope[f] for f in LIMIT_FIELDS}


def tenant_row(s: Session, name: str, *, lock: bool = False, deleted: bool = False) -> Tenant:
    """The tenant called ``name`` in session ``s`` (locked for an update with ``lock``; a
    deleted one too with ``deleted``).

    Raises:
        NotFound: no such tenant, with close names, or it was deleted, with what remains.
    """
    query = select(Tenant).where(Tenant.name == name)
    if not deleted:
        query = query.where(Tenant.deleted_at.is_(None))
    row = s.scalar(query.with_for_update() if lock else query)
    if row is None:
        gone = s.scalar(select(Tenant.deleted_at).where(Tenant.name == name))
        if gone is not None:
            raise NotFound(
                f"tenant {name!r} was deleted on {as_utc(gone):%Y-%m-%d %H:%M} UTC",
                param="tenant",
                code="tenant_not_found",
                otherwise=f"its usage stays (`zhisuan usage --tenant {name}`); "
                f"`zhisuan tenants create {name}` brings the name back",
            )
        live = select(Tenant.name).where(Tenant.deleted_at.is_(None))
        names = list(s.scalars(live))
        raise NotFound(
            f"tenant {name!r} not found",
            suggestions=closest(name, names),
            param="tenant",
            code="tenant_not_found",
        )
    return row


def _tenant_taken(name: str) -> UserError:
    return UserError(
        f"a tenant named {name!r} already exists",
        param="name",
        code="tenant_exists",
        hint=f"change its limits with `zhisuan tenants set {name} …`",
    )
