"""Keys are resolved once per cache period, by the header that carried them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import update

from zhisuan.errors import AuthenticationError, ZhisuanError
from zhisuan.gateway import _auth
from zhisuan.gateway._auth import Authenticator
from zhisuan.store import Store, Tenant


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(f"sqlite:///{tmp_path / 'auth.db'}") as s:
        s.create_tenant("team")
        yield s


def _scope(*headers: tuple[bytes, bytes]) -> dict[str, Any]:
    return {"type": "http", "path": "/v1/chat/completions", "headers": list(headers)}


def test_a_key_is_looked_up_once_then_found_by_its_header(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, secret = store.create_key(tenant="team")
    lookups: list[str] = []
    real = store.authenticate
    monkeypatch.setattr(store, "authenticate", lambda s: lookups.append(s) or real(s))
    auth = Authenticator(store, admin_key=None)
    bearer = (b"authorization", f"Bearer {secret}".encode())
    for _ in range(3):
        assert auth.check(_scope((b"host", b"x"), bearer)).tenant == "team"
    assert auth.check(_scope((b"api-key", secret.encode()))).tenant == "team"
    assert len(lookups) == 1  # the second header form found the digest cache
    with pytest.raises(AuthenticationError):
        auth.check(_scope((b"authorization", f"Bearer {secret}x".encode())))


def test_a_revoked_key_is_refused_once_the_cache_is_cleared(store: Store) -> None:
    key, secret = store.create_key(tenant="team")
    auth = Authenticator(store, admin_key=None)
    scope = _scope((b"authorization", f"Bearer {secret}".encode()))
    assert auth.check(scope).tenant == "team"
    store.revoke_key(key.prefix)
    auth.clear()  # what the admin API and reconcile do after a change
    with pytest.raises(AuthenticationError, match="revoked"):
        auth.check(scope)


def test_a_cached_key_stops_working_when_it_expires(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    expires = datetime.now(UTC) + timedelta(hours=1)
    _, secret = store.create_key(tenant="team", expires_at=expires)
    auth = Authenticator(store, admin_key=None)
    scope = _scope((b"authorization", f"Bearer {secret}".encode()))
    assert auth.check(scope).tenant == "team"
    later = expires.timestamp() + 1
    monkeypatch.setattr(time, "time", lambda: later)
    with pytest.raises(AuthenticationError, match="expired"):
        auth.check(scope)


def test_refusals_are_counted_by_reason(store: Store) -> None:
    key, secret = store.create_key(tenant="team")
    auth = Authenticator(store, admin_key=None)
    bearer = (b"authorization", f"Bearer {secret}".encode())
    refused = (
        (_scope(), "missing"),
        (_scope((b"authorization", b"Bearer zs-nope")), "incorrect"),
        ({**_scope(bearer), "path": "/admin/tenants"}, "admin_required"),
    )
    for scope, _ in refused:
        with pytest.raises(ZhisuanError):
            auth.check(scope)
    assert auth.check(_scope(bearer)).tenant == "team"  # an accepted key counts nothing
    store.revoke_key(key.prefix)
    auth.clear()
    with pytest.raises(AuthenticationError):
        auth.check(_scope(bearer))
    assert auth.refusals == {
        ("missing",): 1,
        ("incorrect",): 1,
        ("admin_required",): 1,
        ("revoked",): 1,
    }


def test_a_refused_key_is_remembered_by_its_header(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that keeps sending a wrong or revoked key costs no database query each time."""
    key, secret = store.create_key(tenant="team")
    store.revoke_key(key.prefix)
    lookups: list[str] = []
    real = store.authenticate
    monkeypatch.setattr(store, "authenticate", lambda s: lookups.append(s) or real(s))
    monkeypatch.setattr(_auth, "REFUSED_KEPT", 2)
    auth = Authenticator(store, admin_key=None)
    revoked = _scope((b"authorization", f"Bearer {secret}".encode()))
    for _ in range(3):
        with pytest.raises(AuthenticationError, match="revoked"):
            auth.check(revoked)
    assert len(lookups) == 1 and auth.refusals == {("revoked",): 3}
    for wrong in (b"zs-a", b"zs-b"):  # two more refused headers push the first one out
        with pytest.raises(AuthenticationError, match="Incorrect"):
            auth.check(_scope((b"authorization", b"Bearer " + wrong)))
    with pytest.raises(AuthenticationError, match="revoked"):
        auth.check(revoked)
    assert len(lookups) == 4
    auth.clear()  # a change through the admin API (an expiry moved, say) is seen at once
    with pytest.raises(AuthenticationError, match="revoked"):
        auth.check(revoked)
    assert len(lookups) == 5


def test_a_second_header_form_does_not_keep_a_key_past_its_lookups_period(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key revoked elsewhere (no :meth:`clear` here) stops working :data:`CACHE_S` after
    its lookup, even when the same key came in another header just before then."""
    key, secret = store.create_key(tenant="team")
    clock = [1000.0]
    monkeypatch.setattr(_auth, "time", SimpleNamespace(monotonic=lambda: clock[0], time=time.time))
    auth = Authenticator(store, admin_key=None)
    auth.check(_scope((b"authorization", f"Bearer {secret}".encode())))  # looked up
    store.revoke_key(key.prefix)  # through another gateway
    clock[0] += _auth.CACHE_S - 0.1
    azure = _scope((b"api-key", secret.encode()))
    assert auth.check(azure).tenant == "team"  # still the cached lookup
    clock[0] += 0.2  # CACHE_S after the lookup
    with pytest.raises(AuthenticationError, match="revoked"):
        auth.check(azure)


def test_a_deleted_tenants_key_is_refused_as_revoked(store: Store) -> None:
    """A key that escaped its tenant's deletion (created meanwhile) is refused all the same."""
    _, secret = store.create_key(tenant="team")
    with store.session() as s, s.begin():
        s.execute(update(Tenant).where(Tenant.name == "team").values(deleted_at=datetime.now(UTC)))
    auth = Authenticator(store, admin_key=None)
    with pytest.raises(AuthenticationError, match=r"^The API key has been revoked\.$"):
        auth.check(_scope((b"authorization", f"Bearer {secret}".encode())))
    assert auth.refusals == {("revoked",): 1}
