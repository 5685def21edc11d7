"""Who is calling: API keys resolved to a tenant, checked on every request.

With auth on, nothing but ``/health`` and ``/metrics`` answers without a key; ``/admin``
needs an admin key (a stored one, or ``ZHISUAN_ADMIN_KEY``). With auth off (only allowed
on loopback) every caller is the ``anonymous`` tenant with admin rights.

Keys are looked up by their clear prefix and compared by sha256 in constant time (in the
store); a deleted tenant's key is refused as revoked, whatever its row says. A resolved key
is cached for :data:`CACHE_S` seconds from its lookup, by its digest and by the header that
carried it (a lookup on Python's keyed SipHash of the bytes: no sha256 per request, and a
wrong key's timing tells nothing of a right one), and the cache is dropped when the store
changes through the admin API or ``POST /admin/reconcile`` (which the CLI calls after a
revoke), so revocation takes effect at once on this gateway and within :data:`CACHE_S` on
others. Each lookup of a stored key marks it as used (:attr:`Authenticator.on_used`), so
its ``last_used_at`` is within seconds of its last request. Keys never reach the logs.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Receive, Scope, Send

from zhisuan.engines._turns import tenant_value
from zhisuan.errors import AuthenticationError, PermissionDenied, ZhisuanError
from zhisuan.gateway._quota import Limits
from zhisuan.gateway._reply import send_error
from zhisuan.store import ADMIN_TENANT, ANONYMOUS, Store

CACHE_S = 5.0
REFUSED_KEPT = 1024
"""Refused key headers remembered (the oldest go first): a client that keeps sending a wrong
or revoked key costs a dictionary lookup, not a database query (130-160 µs on SQLite)."""
OPEN_PATHS = frozenset({"/health", "/metrics"})


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one request.

    Attributes:
        tenant: tenant name (``anonymous`` with auth off, ``admin`` for admin keys).
        key_prefix: the key's visible prefix (None with auth off or the bootstrap key).
        admin: may use the admin API.
        models: allowed models per allow-lists of key and tenant (None: all).
        scopes: quota scopes ``(id, limits)`` to reserve in: the tenant's and the key's.
        expires_at: epoch seconds after which the key stops working (None: never).
        weight: the tenant's weight in a replica's queue (``zhisuan.engines._turns``).
        budgeted: some scope has a money budget (derived from ``scopes``).
        line: the value of the worker request's tenant header, the line the request waits
            in there: the tenant's name, with its weight where that is not 1 (derived).
    """

    tenant: str
    key_prefix: str | None
    admin: bool
    models: tuple[frozenset[str] | None, ...] = ()
    scopes: tuple[tuple[str, Limits], ...] = ()
    expires_at: float | None = None
    weight: int = 1
    budgeted: bool = field(init=False, default=False)
    line: str = field(init=False, default="")

    def __post_init__(self) -> None:
        budgeted = any(limits.budget is not None for _, limits in self.scopes)
        object.__setattr__(self, "budgeted", budgeted)  # frozen: set once, here
        object.__setattr__(self, "line", tenant_value(self.tenant, self.weight))

    def allows(self, model: str) -> bool:
        return all(allowed is None or model in allowed for allowed in self.models)


OFF = Principal(tenant=ANONYMOUS, key_prefix=None, admin=True)


class KeyRefused(AuthenticationError):
    """A key the gateway does not accept, and why: ``incorrect``, ``revoked`` or ``expired``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Authenticator:
    """Resolves secrets to principals, with a short cache."""

    def __init__(self, store: Store, admin_key: str | None) -> None:
        self._store = store
        self._admin_digest = _digest(admin_key) if admin_key else None
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._by_header: dict[bytes, tuple[float, Principal]] = {}
        self._refused: dict[bytes, tuple[float, str, str]] = {}  # when, reason, message
        self.refusals: dict[tuple[str], float] = {}
        """Requests refused, by reason: ``missing``, ``incorrect``, ``revoked``,
        ``expired``, ``admin_required`` (``zhisuan_auth_refusals_total``)."""
        self.on_used: Callable[[str], None] | None = None
        """Told a stored key's prefix each time the key is looked up (at most once per
        :data:`CACHE_S` while it is in use), for its ``last_used_at``."""

    def _refuse(self, reason: str, err: ZhisuanError) -> ZhisuanError:
        """Count a refusal; the error to raise."""
        self.refusals[(reason,)] = self.refusals.get((reason,), 0.0) + 1.0
        return err

    def _refuse_key(self, reason: str, message: str) -> KeyRefused:
        """Count a refused key; the error to raise."""
        err = KeyRefused(reason, message)
        self._refuse(reason, err)
        return err

    def clear(self) -> None:
        """Forget cached keys (after a revoke or a limit change)."""
        self._cache.clear()
        self._by_header.clear()
        self._refused.clear()

    def resolve(self, secret: str) -> Principal:
        """The principal of ``secret``.

        Raises:
            AuthenticationError: unknown, revoked or expired key, or a deleted tenant's.
        """
        return self._resolve(secret)[1]

    def _resolve(self, secret: str) -> tuple[float, Principal]:
        """When the principal of ``secret`` was loaded from the store, and the principal.

        Raises:
            AuthenticationError: unknown, revoked or expired key, or a deleted tenant's.
        """
        digest = _digest(secret)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is None or now - hit[0] >= CACHE_S:
            hit = self._cache[digest] = (now, self._load(secret, digest))
        expires_at = hit[1].expires_at
        if expires_at is not None and time.time() >= expires_at:
            self._cache.pop(digest, None)
            raise self._refuse_key("expired", "The API key has expired.")
        return hit

    def check(self, scope: Scope) -> Principal:
        """The principal of a request to a path that needs a key.

        Raises:
            AuthenticationError: no key, or an unknown, revoked or expired one.
            PermissionDenied: a tenant key on the admin API.
        """
        principal = self._seen(scope)
        if principal is None:
            found = credential(scope)
            if found is None:
                raise self._refuse(
                    "missing",
                    AuthenticationError(
                        "You didn't provide an API key. Send it as 'Authorization: Bearer "
                        "YOUR_KEY'."
                    ),
                )
            principal = self._resolve_header(*found)
        if not principal.admin:
            path: str = scope["path"]
            if path.startswith("/admin"):
                err = PermissionDenied("The admin API needs an admin key.", code="admin_required")
                raise self._refuse("admin_required", err)
            if path == "/metrics":  # reached only with --metrics admin
                err = PermissionDenied("/metrics needs an admin key here.", code="admin_required")
                raise self._refuse("admin_required", err)
        return principal

    def _resolve_header(self, secret: str, header: bytes) -> Principal:
        """The principal of ``secret``, which came in ``header``; a refusal is remembered
        by the header for :data:`CACHE_S` (and forgotten by :meth:`clear`)."""
        now = time.monotonic()
        refused = self._refused.get(header)
        if refused is not None and now - refused[0] < CACHE_S:
            # a new error each time: one raised again would grow its traceback
            raise self._refuse_key(refused[1], refused[2])
        try:
            hit = self._resolve(secret)
        except KeyRefused as err:
            if len(self._refused) >= REFUSED_KEPT:
                del self._refused[next(iter(self._refused))]
            self._refused[header] = (now, err.reason, err.message)
            raise
        # stamped when the principal was loaded, not now: a second header form of a key
        # loaded earlier must not keep it for longer than CACHE_S after its lookup
        self._by_header[header] = hit
        return hit[1]

    def _seen(self, scope: Scope) -> Principal | None:
        """The cached principal of the request's first key header, if still valid."""
        for name, value in scope["headers"]:
            if name == b"authorization" or name == b"api-key":
                hit = self._by_header.get(value)
                if hit is None or time.monotonic() - hit[0] >= CACHE_S:
                    return None
                expires_at = hit[1].expires_at
                if expires_at is not None and time.time() >= expires_at:
                    return None
                return hit[1]
        return None

    def _load(self, secret: str, digest: str) -> Principal:
        if self._admin_digest is not None and hmac.compare_digest(digest, self._admin_digest):
            return Principal(tenant=ADMIN_TENANT, key_prefix=None, admin=True)
        key = self._store.authenticate(secret)
        if key is None:
            raise self._refuse_key("incorrect", "Incorrect API key provided.")
        status = key.status()
        if status == "active" and key.tenant is not None and key.tenant.deleted_at is not None:
            status = "revoked"  # deleting a tenant revokes its keys; one created meanwhile too
        if status != "active":
            raise self._refuse_key(status, f"The API key has been {status}.")
        if self.on_used is not None:
            self.on_used(key.prefix)
        if key.is_admin:
            return Principal(tenant=ADMIN_TENANT, key_prefix=key.prefix, admin=True)
        tenant = key.tenant
        assert tenant is not None
        return Principal(
            tenant=tenant.name,
            key_prefix=key.prefix,
            admin=False,
            models=(_allow(tenant.models), _allow(key.models)),
            scopes=(
                (f"tenant:{tenant.name}", tenant.limits),
                (f"key:{key.prefix}", key.limits),
            ),
            expires_at=key.expires_at.timestamp() if key.expires_at else None,
            weight=tenant.weight,
        )


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _allow(models: list[str] | None) -> frozenset[str] | None:
    return None if models is None else frozenset(models)


def credential(scope: Scope) -> tuple[str, bytes] | None:
    """The key from ``Authorization: Bearer …`` (or ``api-key``, as Azure clients send),
    and the raw value of the header that carried it."""
    headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
    for name, value in headers:
        if name == b"authorization":
            kind, _, token = value.decode("latin-1").partition(" ")
            if kind.lower() == "bearer" and token.strip():
                return token.strip(), value
        elif name == b"api-key" and value.strip():
            return value.decode("latin-1").strip(), value
    return None


class AuthGuard:
    """Pure-ASGI middleware: attach the principal, or answer 401/403 in OpenAI's form."""

    def __init__(
        self, app: ASGIApp, auth: Authenticator | None, open_paths: frozenset[str] = OPEN_PATHS
    ) -> None:
        self.app = app
        self.auth = auth
        self.open_paths = open_paths  # answered without a key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        state = scope.setdefault("state", {})
        if self.auth is None:
            state["principal"] = OFF
        elif path not in self.open_paths:
            try:
                state["principal"] = self.auth.check(scope)
            except ZhisuanError as err:
                await send_error(send, err)
                return
        await self.app(scope, receive, send)
