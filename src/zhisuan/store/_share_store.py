"""Repository methods for tenants and API keys, mixed into :class:`zhisuan.store.Store`.

Keys are ``"zs-" + secrets.token_urlsafe(32)`` (256 random bits). Only the first
:data:`KEY_PREFIX_LEN` characters (the *prefix*, an index for lookup and the name shown in
lists and usage) and the sha256 of the whole secret are stored; :meth:`create_key` returns
the secret once. :meth:`authenticate` finds the row by prefix and compares the digests with
:func:`hmac.compare_digest`. Secrets are never logged; prefixes are.

Tenants live in :mod:`zhisuan.store._tenant_store` and usage records in
:mod:`zhisuan.store._usage_store`; this mixin inherits both, so ``Store`` needs a single base.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from zhisuan.errors import InvalidParameter, NotFound, closest
from zhisuan.store._share_checks import (
    apply_limits,
    as_utc,
    check_within_tenant,
)
from zhisuan.store._share_models import (
    KEY_PREFIX_LEN,
    LIMIT_FIELDS,
    ApiKey,
    Tenant,
    hash_secret,
)
from zhisuan.store._tenant_store import TenantStoreMixin, limit_kwargs, tenant_row
from zhisuan.store.models import utcnow

log = logging.getLogger(__name__)

KEY_SCHEME = "zs-"
# Compared against when no key has the prefix, so a miss costs about what a hit does.
_DUMMY_HASH = hash_secret("zs-not-a-key")


class ShareStoreMixin(TenantStoreMixin):
    """API keys (and, through :class:`TenantStoreMixin`, tenants and usage records)."""

    # -- keys -----------------------------------------------------------------------------

    def create_key(
        self,
        *,
        tenant: str | None,
        admin: bool = False,
        name: str | None = None,
        models: list[str] | None = None,
        expires_at: datetime | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        tokens_per_day: int | None = None,
        budget: float | Decimal | None = None,
        max_concurrent: int | None = None,
    ) -> tuple[ApiKey, str]:
        """Create an API key for ``tenant``, or an admin key (``admin=True``, no tenant).

        Args:
            tenant: the owning tenant's name; None exactly when ``admin``.
            admin: an admin key (the admin API); it belongs to no tenant and has no limits.
            name: a label for lists.
            models: the key's allow-list, narrowing its tenant's (None = the tenant's).
            expires_at: when the key stops working (naive = UTC); must be in the future.
            rpm, tpm, tokens_per_day, budget, max_concurrent: the key's own limits, applied
                on top of the tenant's (None = only the tenant's); ``budget`` as for
                :meth:`create_tenant`.

        Returns:
            ``(row, secret)``: the stored key and its plaintext, which is not kept anywhere.

        Raises:
            InvalidParameter: both or neither of tenant/admin, limits on an admin key, a
                limit ≤ 0 or not finite, ``expires_at`` not in the future (or outside years
                1-9999 in UTC), or a model the tenant's allow-list leaves out.
            NotFound: no such tenant, or it was deleted (also while the key was being made:
                nothing is written).
        """
        if admin == (tenant is not None):
            raise InvalidParameter(
                "a key belongs to a tenant or is an admin key, not both or neither",
                param="tenant",
                hint="pass --tenant NAME for a tenant's key, or --admin for an admin key",
            )
        limits = limit_kwargs(locals())
        if name is not None and not 0 < len(name) <= 128:
            raise InvalidParameter("a key name must be 1-128 characters", param="name")
        if admin and (models is not None or any(v is not None for v in limits.values())):
            raise InvalidParameter(
                "an admin key has no limits or allow-list", param="admin", hint="drop them"
            )
        if expires_at is not None:
            expires_at = _check_expiry(expires_at)
        for _attempt in range(5):  # a 54-bit prefix collision is astronomically rare
            secret = KEY_SCHEME + secrets.token_urlsafe(32)
            row = ApiKey(
                name=name,
                prefix=secret[:KEY_PREFIX_LEN],
                hash=hash_secret(secret),
                is_admin=admin,
                expires_at=expires_at,
            )
            apply_limits(row, {**limits, "models": models})
            try:
                with self.session_factory() as s, s.begin():
                    row.tenant = tenant_row(s, tenant, lock=True) if tenant is not None else None
                    check_within_tenant(row, row.tenant)
                    s.add(row)
                    if row.tenant is not None:
                        _still_there(s, row.tenant)
            except IntegrityError:
                continue
            log.info("created %s key %s", "admin" if admin else f"tenant {tenant}", row.prefix)
            return row, secret
        raise RuntimeError("could not find a free key prefix")  # pragma: no cover

    def authenticate(self, secret: str) -> ApiKey | None:
        """The key whose secret is ``secret``, or None.

        The row is found by prefix and the sha256 of ``secret`` is compared with the stored
        one in constant time. A *revoked or expired key is still returned*: the caller
        decides (``key.status()`` is ``"active"``, ``"revoked"`` or ``"expired"``), so it can
        say why a request is refused. ``key.tenant`` is loaded and readable after return;
        ``key.allows(model)`` checks both allow-lists. The secret is never logged.

        Args:
            secret: the bearer token as presented.

        Returns:
            The key, or None when no key matches.
        """
        if len(secret) <= KEY_PREFIX_LEN or len(secret) > 256:
            return None
        with self.session_factory() as s:
            row = s.scalar(select(ApiKey).where(ApiKey.prefix == secret[:KEY_PREFIX_LEN]))
        digest = hash_secret(secret)
        if row is None:
            hmac.compare_digest(digest, _DUMMY_HASH)
            return None
        return row if hmac.compare_digest(digest, row.hash) else None

    def list_keys(self, tenant: str | None = None) -> list[ApiKey]:
        """Keys (revoked ones too), oldest first; only ``tenant``'s when given.

        Raises:
            NotFound: ``tenant`` does not exist.
        """
        with self.session_factory() as s:
            query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
            if tenant is not None:
                query = query.where(ApiKey.tenant_id == tenant_row(s, tenant, deleted=True).id)
            return list(s.scalars(query))

    def revoke_key(self, prefix: str) -> ApiKey:
        """Revoke the key with ``prefix`` (idempotent: a revoked key stays as it was).

        Args:
            prefix: the key's prefix as shown by ``keys list``; a whole key is accepted too
                (only its prefix is used).

        Returns:
            The key, with ``revoked_at`` set.

        Raises:
            NotFound: no key has this prefix.
        """
        with self.session_factory() as s, s.begin():
            row = _key(s, prefix)
            if row.revoked_at is None:
                row.revoked_at = utcnow()
                log.info("revoked key %s", row.prefix)
        return row

    def update_key(self, prefix: str, **changes: Any) -> ApiKey:
        """Change some of a key's limits, allow-list, expiry or name; only those given.

        Args:
            prefix: the key's prefix (or the whole key).
            **changes: any of ``rpm``, ``tpm``, ``tokens_per_day``, ``budget``,
                ``max_concurrent``, ``models``, ``expires_at``, ``name``; ``None`` clears
                one (the tenant's limit or allow-list applies; no expiry; no name).

        Returns:
            The updated key.

        Raises:
            NotFound: no key has this prefix.
            InvalidParameter: an unknown field, a limit ≤ 0 or not finite, limits or an
                allow-list on an admin key, ``expires_at`` not in the future (or outside
                years 1-9999 in UTC), a name over 128 characters, a model the tenant's
                allow-list leaves out.
        """
        fields = (*LIMIT_FIELDS, "models", "expires_at", "name")
        unknown = sorted(set(changes) - set(fields))
        if unknown:
            raise InvalidParameter(
                f"unknown key field {unknown[0]!r}",
                param=unknown[0],
                hint=f"choose from: {', '.join(fields)}",
            )
        name, expires_at = changes.pop("name", ...), changes.pop("expires_at", ...)
        if isinstance(name, str) and not 0 < len(name) <= 128:
            raise InvalidParameter("a key name must be 1-128 characters", param="name")
        if isinstance(expires_at, datetime):
            expires_at = _check_expiry(expires_at)
        with self.session_factory() as s, s.begin():
            row = _key(s, prefix)
            if row.is_admin and any(v is not None for v in changes.values()):
                raise InvalidParameter(
                    "an admin key has no limits or allow-list", param="admin", hint="drop them"
                )
            apply_limits(row, changes)
            if "models" in changes:
                check_within_tenant(row, row.tenant)
            if name is not ...:
                row.name = name
            if expires_at is not ...:
                row.expires_at = expires_at
        log.info("updated key %s", row.prefix)
        return row

    def touch_keys(self, prefixes: list[str], at: datetime | None = None) -> None:
        """Set ``last_used_at`` of the keys with these prefixes (one statement; optional).

        Meant for the metering writer, once per batch, not once per request.
        """
        if not prefixes:
            return
        with self.session_factory() as s, s.begin():
            s.execute(
                update(ApiKey)
                .where(ApiKey.prefix.in_(sorted(set(prefixes))))
                .values(last_used_at=at or utcnow())
            )


def _key(s: Session, prefix: str) -> ApiKey:
    """The key with ``prefix`` (a whole key gives its prefix), locked for the update."""
    prefix = prefix.strip()[:KEY_PREFIX_LEN]
    row = s.scalar(select(ApiKey).where(ApiKey.prefix == prefix).with_for_update(of=ApiKey))
    if row is None:
        prefixes = list(s.scalars(select(ApiKey.prefix)))
        raise NotFound(
            f"no API key with prefix {prefix!r}",
            suggestions=closest(prefix, prefixes),
            param="prefix",
            code="key_not_found",
            otherwise="`zhisuan keys list` shows every key's prefix",
        )
    return row


def _still_there(s: Session, tenant: Tenant) -> None:
    """Refuse a key inserted while its tenant was being deleted (raise, so it rolls back).

    Called after the key's INSERT: the transaction then holds the write lock (SQLite) or
    the tenant's row lock (PostgreSQL), so a concurrent ``delete_tenant`` either committed
    before, and is seen here, or commits after, and revokes this key with the others. A
    column select reads the database, not the session's identity map.
    """
    s.flush()
    deleted_at = select(Tenant.deleted_at).where(Tenant.id == tenant.id)
    if s.scalar(deleted_at) is not None:
        tenant_row(s, tenant.name)  # raises NotFound: "tenant … was deleted on …"


def _check_expiry(expires_at: datetime) -> datetime:
    """``expires_at`` in UTC (naive = UTC), refused unless in the future."""
    expires_at = as_utc(expires_at, param="expires_at")
    if expires_at <= utcnow():
        raise InvalidParameter(
            f"expiry {expires_at.isoformat()} is not in the future",
            param="expires_at",
            hint="give a later date, e.g. --expires 2030-01-01",
        )
    return expires_at
