"""Helpers of ``zhisuan tenants|keys|usage``: dates, allow-lists, limits, notifying a gateway.

Light at import (no SQLAlchemy), like every command module.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from zhisuan.cli._common import console, err_console
from zhisuan.errors import InvalidParameter
from zhisuan.limits import written_amount
from zhisuan.settings import Settings

if TYPE_CHECKING:
    from zhisuan.store import Store

_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_when(text: str, *, param: str, future: bool = False) -> datetime:
    """A point in time from the command line, in UTC.

    Args:
        text: ``YYYY-MM-DD`` (midnight UTC), an ISO 8601 datetime (naive = UTC), or a
            relative span ``30m``, ``24h``, ``7d``, ``2w`` (ago, or from now if ``future``).
        param: the option's name, for the error.
        future: read a relative span as from now rather than ago (``--expires 30d``).

    Returns:
        A timezone-aware datetime in UTC.

    Raises:
        InvalidParameter: none of the forms above, or a time that falls outside years
            1-9999 in UTC.
    """
    value = text.strip()
    rel = _RELATIVE.fullmatch(value.lower())
    try:
        if rel:
            span = timedelta(seconds=float(rel.group(1)) * _UNIT_S[rel.group(2)])
            now = datetime.now(UTC)
            return now + span if future else now - span
        if _DATE.fullmatch(value):
            return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
        parsed = datetime.fromisoformat(value)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except OverflowError as exc:  # a span past year 9999 (or before 1), or an offset there
        raise InvalidParameter(
            f"{param} {text!r} is out of range: it falls outside years 1-9999 in UTC",
            param=param,
            hint="give a date between 0001-01-02 and 9999-12-30, or a shorter span",
        ) from exc
    except ValueError:
        pass
    raise InvalidParameter(
        f"cannot read {param} {text!r} as a date",
        param=param,
        hint="use YYYY-MM-DD, an ISO datetime like 2025-03-01T12:00:00Z, or a span like 24h or 7d",
    )


def parse_models(text: str | None) -> list[str] | None:
    """``"a, b"`` → ``["a", "b"]``; None stays None (every model).

    Raises:
        InvalidParameter: the list names no model.
    """
    if text is None:
        return None
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise InvalidParameter(
            "--models names no model",
            param="models",
            hint="e.g. --models qwen2.5-0.5b,llama-3.2-1b; leave it out to allow every model",
        )
    return names


def budget_option(help_text: str) -> Any:
    """The ``--budget`` option: the amount as typed, a decimal for the store to judge digit
    for digit (as a float, ``1.00000000000000001`` would pass for 1)."""
    return typer.Option(None, "--budget", help=help_text, parser=parse_amount, metavar="<amount>")


def parse_amount(text: str) -> Decimal:
    """An amount from the command line, exact (:func:`zhisuan.limits.written_amount`).

    Raises:
        typer.BadParameter: ``text`` is not a number (a usage error, as for any option).
    """
    try:
        return written_amount(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def limits(**given: Any) -> dict[str, Any]:
    """The limit options actually given (None means "not given" on the command line)."""
    return {k: v for k, v in given.items() if v is not None}


def changes(clear: list[str], clearable: tuple[str, ...], **given: Any) -> dict[str, Any]:
    """What a ``set`` command changes: the options given, and the ``--clear`` fields as None
    (``max-concurrent`` = ``max_concurrent``).

    Raises:
        InvalidParameter: nothing to change, a field that cannot be cleared, or one both
            set and cleared.
    """
    out = limits(**given)
    for field in clear:
        key = field.strip().replace("-", "_")
        if key not in clearable:
            hint = f"choose from: {', '.join(clearable)}"
            raise InvalidParameter(f"cannot clear {field!r}", param="clear", hint=hint)
        if key in out:
            raise InvalidParameter(
                f"{field} is both set and cleared", param="clear", hint="give one or the other"
            )
        out[key] = None
    if not out:
        hint = "give a limit such as --rpm 60, or --clear rpm"
        raise InvalidParameter("nothing to change", param="clear", hint=hint)
    return out


def day_and_month_start(now: datetime | None = None) -> tuple[datetime, datetime]:
    """Starts of the current UTC day and calendar month (the quota periods)."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return day, day.replace(day=1)


def show_limit(value: Any, unit: str = "") -> str:
    """A limit for a table: ``-`` for unlimited; a float is money (see :func:`show_money`)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{show_money(value)}{unit}"
    return f"{value:,}{unit}"


def show_money(amount: float) -> str:
    """An amount with every digit it is stored with (``Numeric(18, 6)``): thousands
    separators, at most 6 decimals, no trailing zeros (``1,234,567.89``, ``100``)."""
    text = f"{Decimal(repr(amount)):,.6f}"  # repr: the float's shortest exact digits
    return text.rstrip("0").rstrip(".") if "." in text else text


def table_console() -> Console:
    """Where to print a table (the shared console is already wide when piped)."""
    return console


def echo_json(value: Any) -> None:
    """Print ``value`` as indented JSON on stdout."""
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


def notify(settings: Settings) -> None:
    """Ask a running gateway to reload keys and limits (no gateway is fine)."""
    from zhisuan.cli import serve

    serve._notify(settings)


PRICE_OPTIONS = ("price_input_per_mtok", "price_output_per_mtok", "cost_per_hour")


def warn_unpriced(store: Store, settings: Settings, models: list[str] | None) -> None:
    """Warn that a budget will not see the requests to deployments within ``models`` (None:
    every one) that have no price: they cost nothing, so they never count against it."""
    if settings.device_cost_per_hour:
        return  # every deployment without a price of its own is billed by device time
    free = [
        d.model_name
        for d in store.list_deployments()
        if (models is None or d.model_name in models)
        and not any((d.options or {}).get(name) for name in PRICE_OPTIONS)
    ]
    if free:
        err_console.print(
            f"[yellow]warning:[/] the budget counts what requests cost, and requests to "
            f"{', '.join(free)} cost nothing (no price)",
            highlight=False,
            soft_wrap=True,
        )
        err_console.print(
            "[yellow]hint:[/] price them: `zhisuan deploy MODEL --price-in X --price-out Y` "
            "(per million tokens), or `--cost-per-hour X`",
            highlight=False,
            soft_wrap=True,
        )
