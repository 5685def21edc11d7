"""``zhisuan tenants create|set|list|show|delete``: who uses the service, within which limits.

Limits are per tenant (and may be narrowed per key, see ``zhisuan keys``): requests and
tokens per minute, tokens per UTC day, money per calendar month, concurrent requests, and a
model allow-list. Leaving a limit out means unlimited. A tenant's weight (1 to 100, default
1) is its share of a replica's queue: up to that many of its requests start in each round of
turns. A running gateway is told about changes (``POST /admin/reconcile``). Deleting a tenant
revokes its keys and keeps its usage records; its name can be created again.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

import typer

from zhisuan.cli._common import console, fail, user_errors
from zhisuan.cli._share import (
    budget_option,
    changes,
    day_and_month_start,
    echo_json,
    notify,
    parse_models,
    show_limit,
    show_money,
    table_console,
    warn_unpriced,
)
from zhisuan.settings import Settings

if TYPE_CHECKING:
    from zhisuan.store import Tenant

app = typer.Typer(no_args_is_help=True, add_completion=False)

CLEARABLE = ("rpm", "tpm", "tokens_per_day", "budget", "max_concurrent", "models")

_RPM = "Requests per minute \\[default: unlimited]."
_TPM = "Tokens (prompt + completion) per minute \\[default: unlimited]."
_TPD = "Tokens per UTC day \\[default: unlimited]."
_BUDGET = "Money per calendar month, in the tenant's currency \\[default: unlimited]."
_CONC = "Requests in flight at once \\[default: unlimited]."
_CURRENCY = "The budget's currency: the prices' (ZHISUAN_CURRENCY), the only one allowed."
_MODELS = "Comma-separated model allow-list \\[default: every model]."
_WEIGHT = "Its requests started per turn in a replica's queue, 1 to 100."


@app.command("create")
def create(
    name: str = typer.Argument(..., help="Tenant name (lowercase letters, digits, -_.)."),
    rpm: int | None = typer.Option(None, "--rpm", help=_RPM),
    tpm: int | None = typer.Option(None, "--tpm", help=_TPM),
    tokens_per_day: int | None = typer.Option(None, "--tokens-per-day", help=_TPD),
    budget: Decimal | None = budget_option(_BUDGET),
    currency: str | None = typer.Option(None, "--currency", help=_CURRENCY),
    max_concurrent: int | None = typer.Option(None, "--max-concurrent", help=_CONC),
    models: str | None = typer.Option(None, "--models", help=_MODELS),
    weight: int = typer.Option(1, "--weight", help=_WEIGHT),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Create tenant NAME with its limits and weight."""
    from zhisuan.store import open_store, tenant_currency

    settings = Settings()
    with user_errors():
        allow = parse_models(models)
        currency = tenant_currency(currency, settings.currency)
        with open_store(settings) as store:
            tenant = store.create_tenant(
                name,
                rpm=rpm,
                tpm=tpm,
                tokens_per_day=tokens_per_day,
                budget=budget,
                max_concurrent=max_concurrent,
                models=allow,
                currency=currency,
                weight=weight,
            )
            if budget is not None:
                warn_unpriced(store, settings, tenant.models)
    if as_json:
        echo_json(tenant.to_dict())
        return
    console.print(f"created tenant [bold]{tenant.name}[/] ({_summary(tenant)})", highlight=False)
    console.print(f"next: `zhisuan keys create --tenant {tenant.name}`", highlight=False)


@app.command("set")
def set_(
    name: str = typer.Argument(..., help="Tenant name."),
    rpm: int | None = typer.Option(None, "--rpm", help="Requests per minute."),
    tpm: int | None = typer.Option(None, "--tpm", help="Tokens per minute."),
    tokens_per_day: int | None = typer.Option(None, "--tokens-per-day", help="Tokens per day."),
    budget: Decimal | None = budget_option("Money per calendar month."),
    currency: str | None = typer.Option(None, "--currency", help=_CURRENCY),
    max_concurrent: int | None = typer.Option(None, "--max-concurrent", help=_CONC),
    models: str | None = typer.Option(None, "--models", help="Comma-separated allow-list."),
    weight: int | None = typer.Option(None, "--weight", help=_WEIGHT),
    clear: list[str] = typer.Option(
        [], "--clear", help=f"Remove a limit (unlimited): {', '.join(CLEARABLE)}. Repeatable."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Change some of NAME's limits or its weight; those not given stay as they are."""
    from zhisuan.store import open_store, tenant_currency

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
            currency=None if currency is None else tenant_currency(currency, settings.currency),
            models=parse_models(models),
            weight=weight,
        )
        with open_store(settings) as store:
            tenant = store.update_tenant(name, **given)
            if tenant.budget is not None and ("budget" in given or "models" in given):
                warn_unpriced(store, settings, tenant.models)
    notify(settings)
    if as_json:
        echo_json(tenant.to_dict())
        return
    console.print(f"updated tenant [bold]{tenant.name}[/] ({_summary(tenant)})", highlight=False)


@app.command("list")
def list_(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List tenants, their limits and weights."""
    from rich.table import Table

    from zhisuan.store import open_store

    settings = Settings()
    with user_errors(), open_store(settings) as store:
        tenants = store.list_tenants()
    if as_json:
        echo_json([t.to_dict() for t in tenants])
        return
    if not tenants:
        console.print("no tenants yet; create one with `zhisuan tenants create NAME`")
        return
    table = Table()
    table.add_column("name", style="bold", no_wrap=True)
    for header in ("rpm", "tpm", "tokens/day", "budget/month", "concurrent"):
        table.add_column(header, justify="right")
    table.add_column("models")
    table.add_column("weight", justify="right")
    for t in tenants:
        table.add_row(
            t.name,
            show_limit(t.rpm),
            show_limit(t.tpm),
            show_limit(t.tokens_per_day),
            show_limit(t.budget, f" {t.currency}"),
            show_limit(t.max_concurrent),
            ", ".join(t.models) if t.models is not None else "all",
            str(t.weight),
        )
    table_console().print(table)


@app.command("show")
def show(
    name: str = typer.Argument(..., help="Tenant name."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Show NAME's limits, weight, keys and use this UTC day and calendar month."""
    from rich.table import Table

    from zhisuan.store import open_store

    settings = Settings()
    day, month = day_and_month_start()
    with user_errors(), open_store(settings) as store:
        tenant = store.get_tenant(name)
        keys = store.list_keys(name)
        tokens, cost = store.usage_baseline(tenant=name, day_start=day, month_start=month)
    active = sum(k.status() == "active" for k in keys)
    usage: dict[str, Any] = {
        "day_start": day.isoformat(),
        "month_start": month.isoformat(),
        "tokens_today": tokens,
        "cost_this_month": cost,
        "active_keys": active,
        "keys": len(keys),
    }
    if as_json:
        echo_json({**tenant.to_dict(), "usage": usage})
        return
    table = Table(show_header=False, title=tenant.name, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    rows = [
        ("requests/minute", show_limit(tenant.rpm)),
        ("tokens/minute", show_limit(tenant.tpm)),
        ("tokens/day", _used(f"{tokens:,}", tenant.tokens_per_day)),
        ("budget/month", _used(f"{cost:.4f}", tenant.budget, f" {tenant.currency}")),
        ("concurrent", show_limit(tenant.max_concurrent)),
        ("models", ", ".join(tenant.models) if tenant.models is not None else "all"),
        ("weight", str(tenant.weight)),
        ("keys", f"{active} active of {len(keys)}"),
        ("created", tenant.created_at.isoformat(timespec="seconds")),
    ]
    for key, value in rows:
        table.add_row(key, value)
    table_console().print(table)


@app.command("delete")
def delete(
    name: str = typer.Argument(..., help="Tenant name."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Delete without asking."),
) -> None:
    """Delete tenant NAME: its keys are revoked at once; its usage records stay."""
    from zhisuan.store import open_store

    settings = Settings()
    with user_errors(), open_store(settings) as store:
        store.get_tenant(name)  # NotFound first: unknown, or deleted already
        keys = sum(k.revoked_at is None for k in store.list_keys(name))  # as delete revokes
        if not yes:
            question = f"delete tenant {name} and revoke its {keys} key(s)?"
            if not _interactive():
                fail(f"not deleting tenant {name} without a confirmation", "add --yes")
            if not typer.confirm(question):
                fail(f"tenant {name} was not deleted", code=1)
        _, revoked = store.delete_tenant(name)
    notify(settings)
    console.print(
        f"deleted tenant [bold]{name}[/] and revoked {revoked} key(s); its usage stays "
        f"(`zhisuan usage --tenant {name}`)",
        highlight=False,
    )


def _interactive() -> bool:
    """Whether there is someone to ask (standard input is a terminal)."""
    import sys

    return sys.stdin.isatty()


def _summary(t: Tenant) -> str:
    parts = [
        f"{label} {show_limit(getattr(t, field))}"
        for field, label in (
            ("rpm", "rpm"),
            ("tpm", "tpm"),
            ("tokens_per_day", "tokens/day"),
            ("max_concurrent", "concurrent"),
        )
        if getattr(t, field) is not None
    ]
    if t.budget is not None:
        parts.append(f"budget {show_money(t.budget)} {t.currency}/month")
    if t.models is not None:
        parts.append(f"models {', '.join(t.models)}")
    summary = "; ".join(parts) or "no limits"
    return summary if t.weight == 1 else f"{summary}; weight {t.weight}"


def _used(amount: str, limit: float | None, unit: str = "") -> str:
    """What was used, of the limit if there is one."""
    if limit is None:
        return f"{amount}{unit} used (unlimited)"
    return f"{amount} used of {show_limit(limit)}{unit}"
