"""``zhisuan keys create|list|set|revoke``: API keys of tenants, and admin keys.

A key is shown once, when created, alone on the last line of stdout (so scripts can take
``| tail -n1``); the store keeps only its prefix and sha256. Revoking tells a running
gateway at once (``POST /admin/reconcile``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

import typer

from zhisuan.cli._common import console, user_errors
from zhisuan.cli._share import (
    budget_option,
    changes,
    echo_json,
    notify,
    parse_models,
    parse_when,
    show_limit,
    table_console,
    warn_unpriced,
)
from zhisuan.settings import Settings

if TYPE_CHECKING:
    from zhisuan.store import ApiKey, Store

app = typer.Typer(no_args_is_help=True, add_completion=False)

CLEARABLE = (
    "rpm", "tpm", "tokens_per_day", "budget", "max_concurrent", "models", "expires", "name"
)  # fmt: skip


@app.command("create")
def create(
    tenant: str | None = typer.Option(None, "--tenant", help="The tenant the key belongs to."),
    admin: bool = typer.Option(False, "--admin", help="An admin key (the admin API)."),
    name: str | None = typer.Option(None, "--name", help="A label shown in lists."),
    models: str | None = typer.Option(
        None, "--models", help="Comma-separated allow-list, within the tenant's."
    ),
    expires: str | None = typer.Option(
        None,
        "--expires",
        help="YYYY-MM-DD (00:00 UTC), an ISO datetime, or a span from now (30d) "
        "\\[default: never].",
    ),
    rpm: int | None = typer.Option(None, "--rpm", help="Requests per minute for this key."),
    tpm: int | None = typer.Option(None, "--tpm", help="Tokens per minute for this key."),
    tokens_per_day: int | None = typer.Option(None, "--tokens-per-day", help="Tokens per day."),
    budget: Decimal | None = budget_option("Money per calendar month."),
    max_concurrent: int | None = typer.Option(None, "--max-concurrent", help="Requests at once."),
) -> None:
    """Create a key; it is printed once, alone on the last line."""
    from zhisuan.store import open_store

    settings = Settings()
    with user_errors():
        expires_at = parse_when(expires, param="expires", future=True) if expires else None
        allow = parse_models(models)
        with open_store(settings) as store:
            row, secret = store.create_key(
                tenant=tenant,
                admin=admin,
                name=name,
                models=allow,
                expires_at=expires_at,
                rpm=rpm,
                tpm=tpm,
                tokens_per_day=tokens_per_day,
                budget=budget,
                max_concurrent=max_concurrent,
            )
            if budget is not None:
                _warn_unpriced(store, settings, row)
    owner = "an admin key" if row.is_admin else f"a key for tenant {row.tenant_name}"
    until = f", expires {row.expires_at.isoformat()}" if row.expires_at else ""
    typer.echo(f"created {owner} (prefix {row.prefix}{until})")
    typer.echo("store it now; it is not shown again:")
    typer.echo(secret)


@app.command("list")
def list_(
    tenant: str | None = typer.Option(None, "--tenant", help="Only this tenant's keys."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List keys (prefixes only; secrets are not stored)."""
    from rich.table import Table

    from zhisuan.store import open_store

    settings = Settings()
    with user_errors(), open_store(settings) as store:
        keys = store.list_keys(tenant)
    if as_json:
        echo_json([k.to_dict() for k in keys])
        return
    if not keys:
        console.print("no keys yet; create one with `zhisuan keys create --tenant NAME`")
        return
    table = Table(caption="times in UTC; a key's last use is noted within seconds")
    table.add_column("prefix", style="bold", no_wrap=True)
    headers = ("tenant", "name", "models", "limits", "expires", "status", "created", "last used")
    for header in headers:
        table.add_column(header)
    for k in keys:
        table.add_row(
            k.prefix,
            "(admin)" if k.is_admin else (k.tenant_name or "-"),
            k.name or "-",
            "all" if k.is_admin else ", ".join(k.models or []) or "tenant's",
            "-"
            if k.is_admin
            else _limits(k.rpm, k.tpm, k.tokens_per_day, k.budget, k.max_concurrent),
            k.expires_at.strftime("%Y-%m-%d %H:%M") if k.expires_at else "never",
            k.status(),
            k.created_at.strftime("%Y-%m-%d"),
            k.last_used_at.strftime("%Y-%m-%d %H:%M") if k.last_used_at else "never",
        )
    table_console().print(table)


@app.command("set")
def set_(
    prefix: str = typer.Argument(..., help="The key's prefix, as `keys list` shows."),
    rpm: int | None = typer.Option(None, "--rpm", help="Requests per minute for this key."),
    tpm: int | None = typer.Option(None, "--tpm", help="Tokens per minute for this key."),
    tokens_per_day: int | None = typer.Option(None, "--tokens-per-day", help="Tokens per day."),
    budget: Decimal | None = budget_option("Money per calendar month."),
    max_concurrent: int | None = typer.Option(None, "--max-concurrent", help="Requests at once."),
    models: str | None = typer.Option(None, "--models", help="Comma-separated allow-list."),
    expires: str | None = typer.Option(
        None, "--expires", help="YYYY-MM-DD (00:00 UTC), an ISO datetime, or a span (30d)."
    ),
    name: str | None = typer.Option(None, "--name", help="A label shown in lists."),
    clear: list[str] = typer.Option(
        [], "--clear", help=f"Remove one (the tenant's then applies): {', '.join(CLEARABLE)}."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Change some of a key's limits, allow-list, expiry or name; the rest stay."""
    from zhisuan.store import open_store

    settings = Settings()
    with user_errors():
        given = changes(
            clear,
            CLEARABLE,
            rpm=rpm,
            tpm=tpm,
            tokens_per_day=tokens_per_day,
            budget=budget,
            max_concurrent=max_concurrent,
            models=parse_models(models),
            expires=parse_when(expires, param="expires", future=True) if expires else None,
            name=name,
        )
        if "expires" in given:
            given["expires_at"] = given.pop("expires")
        with open_store(settings) as store:
            row = store.update_key(prefix, **given)
            if row.budget is not None and ("budget" in given or "models" in given):
                _warn_unpriced(store, settings, row)
    notify(settings)
    if as_json:
        echo_json(row.to_dict())
        return
    console.print(f"updated key [bold]{row.prefix}[/] ({', '.join(sorted(given))})")


@app.command("revoke")
def revoke(
    prefix: str = typer.Argument(..., help="The key's prefix, as `keys list` shows."),
) -> None:
    """Revoke a key; a running gateway refuses it at once."""
    from zhisuan.store import open_store

    settings = Settings()
    with user_errors(), open_store(settings) as store:
        row = store.revoke_key(prefix)
    notify(settings)
    assert row.revoked_at is not None
    console.print(
        f"revoked [bold]{row.prefix}[/] at {row.revoked_at.isoformat(timespec='seconds')}",
        highlight=False,
    )


def _limits(
    rpm: int | None,
    tpm: int | None,
    tokens_per_day: int | None,
    budget: float | None,
    max_concurrent: int | None,
) -> str:
    pairs = (
        ("rpm", rpm),
        ("tpm", tpm),
        ("tok/day", tokens_per_day),
        ("budget", budget),
        ("conc", max_concurrent),
    )
    shown = [f"{label} {show_limit(v)}" for label, v in pairs if v is not None]
    return ", ".join(shown) or "tenant's"


def _warn_unpriced(store: Store, settings: Settings, key: ApiKey) -> None:
    """Warn of the unpriced deployments a key's budget will not see (those it may use)."""
    if key.tenant_name is None:
        return
    models = key.models
    if models is None:
        models = store.get_tenant(key.tenant_name, deleted=True).models
    warn_unpriced(store, settings, models)
