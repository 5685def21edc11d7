"""``zhisuan usage``: the metering records, one per request, or totals grouped with ``--by``.

``--json`` prints a JSON array (one object per request, or per group); ``--csv`` a header
and rows. Without either, a table. Times are UTC.
"""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING, Any

import typer

from zhisuan.cli._common import console, fail, user_errors
from zhisuan.cli._share import echo_json, parse_when, table_console
from zhisuan.settings import Settings

if TYPE_CHECKING:
    from zhisuan.store import UsageRecord

app = typer.Typer(add_completion=False)

BY = ("model", "key", "day", "tenant")
SUMMARY_TOTALS = (
    "currency",
    "requests",
    "refused",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost",
    "energy_wh",
    "device_s",
    "mean_latency_ms",
    "mean_ttft_ms",
)
_WHEN = "YYYY-MM-DD, an ISO datetime, or a span ago (24h, 7d)"


@app.callback(invoke_without_command=True)
def usage(
    tenant: str | None = typer.Option(None, "--tenant", help="Only this tenant's requests."),
    since: str | None = typer.Option(None, "--since", help=f"From ({_WHEN})."),
    until: str | None = typer.Option(None, "--until", help=f"Before ({_WHEN})."),
    model: str | None = typer.Option(None, "--model", help="Only this model's requests."),
    by: str | None = typer.Option(None, "--by", help="Totals by model | key | day | tenant."),
    limit: int | None = typer.Option(
        None, "--limit", min=1, help="Only the newest N requests \\[default: all]."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array."),
    as_csv: bool = typer.Option(False, "--csv", help="Print CSV (a header, then rows)."),
) -> None:
    """Show usage: one row per request, or totals with --by."""
    from zhisuan.store import ADMIN_TENANT, ANONYMOUS, open_store
    from zhisuan.store.journal import JOURNAL_DIR, replay

    if as_json and as_csv:
        fail("--json and --csv exclude each other", "choose one")
    if by is not None and by not in BY:
        fail(f"cannot group usage by {by!r}", f"use --by {' | '.join(BY)}")
    if by is not None and limit is not None:
        fail("--limit counts requests, and --by gives totals", "use one or the other")
    settings = Settings()
    with user_errors():
        start = parse_when(since, param="since") if since else None
        end = parse_when(until, param="until") if until else None
        with open_store(settings) as store:
            replay(settings.home / JOURNAL_DIR, store.add_usage, live=True)
            if tenant is not None and tenant not in (ANONYMOUS, ADMIN_TENANT):
                store.get_tenant(tenant, deleted=True)  # NotFound with close names
            if by is not None:
                totals = store.usage_summary(
                    by=by,  # type: ignore[arg-type]  # checked against BY above
                    tenant=tenant,
                    since=start,
                    until=end,
                    model=model,
                )
                _print_summary(by, totals, as_json=as_json, as_csv=as_csv)
                return
            rows = store.query_usage(
                tenant=tenant, since=start, until=end, model=model, limit=limit
            )
    _print_records(rows, as_json=as_json, as_csv=as_csv)


def _print_records(rows: list[UsageRecord], *, as_json: bool, as_csv: bool) -> None:
    from zhisuan.store import UsageRecord

    if as_json:
        echo_json([r.to_dict() for r in rows])
        return
    if as_csv:
        _csv(UsageRecord.STABLE_FIELDS, [r.to_dict() for r in rows])
        return
    if not rows:
        console.print("no usage recorded for this selection")
        return
    from rich import box
    from rich.table import Table

    table = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        caption="times UTC; Wh~ = estimated (busy time x power), Wh = measured",
    )
    table.add_column("time", no_wrap=True)
    for header in ("tenant", "key", "model", "status"):
        table.add_column(header, no_wrap=True, overflow="ellipsis")
    for header in ("tokens", "ttft", "ms", "cost", "Wh"):
        table.add_column(header, justify="right", no_wrap=True)
    for r in rows:
        table.add_row(
            r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            r.tenant,
            r.key_prefix or "-",
            r.model,
            r.status,
            f"{r.prompt_tokens}+{r.completion_tokens}",
            _num(r.ttft_ms, 0),
            _num(r.latency_ms, 0),
            f"{r.cost:.4f}",
            _energy(r.energy_wh, r.energy_source),
        )
    table_console().print(table)


def _print_summary(by: str, totals: list[dict[str, Any]], *, as_json: bool, as_csv: bool) -> None:
    fields = (by, "tenant", *SUMMARY_TOTALS) if by == "key" else (by, *SUMMARY_TOTALS)
    if as_json:
        echo_json(totals)
        return
    if as_csv:
        _csv(fields, totals)
        return
    if not totals:
        console.print("no usage recorded for this selection")
        return
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column(by, style="bold", no_wrap=True)
    if by == "key":
        table.add_column("tenant")
    headers = ("requests", "refused", "errors", "prompt", "compl.", "cost", "Wh", "mean ms")
    for header in (*headers, "ttft ms"):
        table.add_column(header, justify="right")
    for t in totals:
        table.add_row(
            str(t[by] if t[by] is not None else "-"),
            *([t["tenant"]] if by == "key" else []),
            f"{t['requests']:,}",
            f"{t['refused']:,}",
            f"{t['errors']:,}",
            f"{t['prompt_tokens']:,}",
            f"{t['completion_tokens']:,}",
            f"{t['cost']:.4f} {t['currency']}",
            f"{t['energy_wh']:.3f}",
            _num(t["mean_latency_ms"], 0),
            _num(t["mean_ttft_ms"], 0),
        )
    table_console().print(table)


def _csv(fields: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    typer.echo(buf.getvalue(), nl=False)


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _energy(wh: float, source: str) -> str:
    return f"{wh:.4f}" + ("" if source == "measured" else "~")
