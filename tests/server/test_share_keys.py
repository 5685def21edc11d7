"""Keys against a real ``zhisuan serve --auth on``: refused, revoked, expired, noted when used,
and the CLI told plainly when it has no admin key for the gateway."""

from __future__ import annotations

import re
import sqlite3
import time

import httpx
import openai
import pytest

from tests.server._serve import Server
from tests.server._share_cli import (
    ADMIN,
    CHAT,
    HI,
    client,
    key_for,
    last_used,
    tenant,
    wait_usage,
)

pytestmark = pytest.mark.server


def test_no_key_bad_key_are_401_but_health_and_metrics_are_open(shared: Server) -> None:
    assert httpx.get(f"{shared.url}/health").status_code == 200
    assert httpx.get(f"{shared.url}/metrics").status_code == 200
    for path in ("/ready", "/v1/models", "/admin/tenants", "/docs", "/openapi.json"):
        resp = httpx.get(f"{shared.url}{path}")
        assert resp.status_code == 401, path
        assert resp.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        client(shared, "zs-not-a-real-key").chat.completions.create(model=CHAT, messages=HI)
    metrics = httpx.get(f"{shared.url}/metrics").text  # no tenant to meter them under
    for reason in ("missing", "incorrect"):
        line = next(
            ln for ln in metrics.splitlines() if f'refusals_total{{reason="{reason}"}}' in ln
        )
        assert float(line.split()[-1]) >= 1, line


def test_key_printed_alone_on_last_line_and_works(shared: Server) -> None:
    key = tenant(shared, "alpha")
    assert key.startswith("zs-") and " " not in key and last_used(shared, key) is None
    resp = client(shared, key).chat.completions.create(model=CHAT, messages=HI, max_tokens=4)
    assert resp.usage is not None and resp.usage.completion_tokens > 0
    deadline = time.monotonic() + 10  # noted with the next batch of usage records
    while last_used(shared, key) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert last_used(shared, key) is not None


def test_revoked_key_is_401_at_once(shared: Server) -> None:
    key = tenant(shared, "revoked-co")
    c = client(shared, key)
    c.chat.completions.create(model=CHAT, messages=HI, max_tokens=2)
    shared.cli("keys", "revoke", key[:12])
    with pytest.raises(openai.AuthenticationError) as info:
        c.chat.completions.create(model=CHAT, messages=HI, max_tokens=2)
    assert "revoked" in str(info.value)


def test_expired_key_is_401(shared: Server) -> None:
    shared.cli("tenants", "create", "expiring")
    key = key_for(shared, "expiring", "--expires", "2999-01-01")
    c = client(shared, key)
    c.chat.completions.create(model=CHAT, messages=HI, max_tokens=2)
    with sqlite3.connect(shared.home / "zhisuan.db") as db:  # time travel: the key's end passed
        db.execute(
            "UPDATE api_keys SET expires_at = ? WHERE prefix = ?",
            ("2001-01-01 00:00:00.000000", key[:12]),
        )
    httpx.post(f"{shared.url}/admin/reconcile", headers={"Authorization": f"Bearer {ADMIN}"})
    with pytest.raises(openai.AuthenticationError) as info:
        c.chat.completions.create(model=CHAT, messages=HI, max_tokens=2)
    assert "expired" in str(info.value)


@pytest.mark.parametrize(
    ("admin_key", "status", "reason"),
    [
        (None, 401, "You didn't provide an API key."),
        ("zs-not-a-key", 401, "Incorrect API key provided."),
        ("tenant", 403, "The admin API needs an admin key."),
    ],
)
def test_ps_without_an_admin_key_says_what_to_set(
    shared: Server, admin_key: str | None, status: int, reason: str
) -> None:
    env = {k: v for k, v in shared.env.items() if k != "ZHISUAN_ADMIN_KEY"}
    if admin_key is not None:
        env["ZHISUAN_ADMIN_KEY"] = tenant(shared, "ps-user") if admin_key == "tenant" else admin_key
    done = Server(shared.proc, shared.url, shared.home, env, shared.log).cli("ps", check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    error, hint = done.stderr.strip().splitlines()
    assert error.startswith(
        f"error: the gateway at {shared.url} needs an admin key (HTTP {status}): {reason}"
    )
    assert hint == (
        "hint: set ZHISUAN_ADMIN_KEY to an admin key (create one with `zhisuan keys create "
        "--admin`)"
    )


def test_a_deleted_tenants_keys_are_401_at_once_and_its_usage_stays(shared: Server) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    key = tenant(shared, "leaving", "--rpm", "1000")
    c = client(shared, key)
    c.chat.completions.create(model=CHAT, messages=HI, max_tokens=2)
    quota = 'zhisuan_quota_used{kind="tenant",limit="rpm",name="leaving"} 1.0'
    assert quota in httpx.get(f"{shared.url}/metrics", timeout=10).text
    gone = httpx.delete(f"{shared.url}/admin/tenants/leaving", headers=admin, timeout=30)
    assert gone.status_code == 200, gone.text
    assert gone.json()["keys_revoked"] == 1 and gone.json()["deleted_at"] is not None
    with pytest.raises(openai.AuthenticationError) as info:
        c.chat.completions.create(model=CHAT, messages=HI, max_tokens=2)
    assert "revoked" in str(info.value)
    listed = httpx.get(f"{shared.url}/admin/tenants", headers=admin, timeout=10).json()
    assert "leaving" not in {t["name"] for t in listed}
    again = httpx.delete(f"{shared.url}/admin/tenants/leaving", headers=admin, timeout=10)
    assert again.status_code == 404 and "was deleted on" in again.json()["error"]["message"]
    metrics = httpx.get(f"{shared.url}/metrics", timeout=10).text.splitlines()
    quotas = [ln for ln in metrics if ln.startswith("zhisuan_quota_")]
    assert not [ln for ln in quotas if 'name="leaving"' in ln]  # its limits are gone
    rows = wait_usage(shared, "leaving", lambda r: len(r) >= 1)  # the history stays
    assert {r["status"] for r in rows} >= {"ok"}


def test_a_tenant_deleted_and_created_again_at_once_keeps_its_months_spend(
    shared: Server,
) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    key = tenant(shared, "phoenix", "--budget", "1")
    with pytest.raises(openai.RateLimitError) as info:  # what a request may cost at most
        client(shared, key).chat.completions.create(model=CHAT, messages=HI, max_tokens=2)
    found = re.search(r"may cost up to ([\d.e+]+)", str(info.value))
    assert found is not None
    worst = float(found.group(1))
    shared.cli("tenants", "set", "phoenix", "--budget", str(worst * 1.001))
    with httpx.Client(base_url=shared.url, headers=admin, timeout=30) as api:
        key = api.post("/admin/keys", json={"tenant": "phoenix"}).json()["key"]
        client(shared, key).chat.completions.create(model=CHAT, messages=HI, max_tokens=2)
        # at once, while the request's usage record is still on its way to the store
        assert api.delete("/admin/tenants/phoenix").status_code == 200
        assert api.post(
            "/admin/tenants", json={"name": "phoenix", "budget": worst * 1.001}
        ).is_success
        key = api.post("/admin/keys", json={"tenant": "phoenix"}).json()["key"]
        with pytest.raises(openai.RateLimitError) as again:  # the month's spend came back too
            client(shared, key).chat.completions.create(model=CHAT, messages=HI, max_tokens=2)
        assert again.value.code == "budget_exceeded"
