"""``zhisuan models import|list|show|rm``: the model store from the command line.

Thin over :mod:`zhisuan.modelstore` and :mod:`zhisuan.store`, which are imported inside the
commands so ``zhisuan --help`` stays instant. Tables by default, ``--json`` for machines.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from zhisuan.cli._common import console, err_console, fail, user_errors
from zhisuan.settings import Settings

if TYPE_CHECKING:
    from zhisuan.modelstore import ProgressCallback
    from zhisuan.store import Model

app = typer.Typer(no_args_is_help=True, add_completion=False)


def _json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


@app.command("import")
def import_(
    path: Path = typer.Argument(..., help="An HF-format directory or a .gguf file."),
    name: str | None = typer.Option(
        None, "--name", help="Served name \\[default: directory name or file stem]."
    ),
    licence: str = typer.Option(
        "research", "--licence", help="Licence tier: research | commercial."
    ),
    task: str | None = typer.Option(
        None, "--task", help="chat | embedding \\[default: detected from the model]."
    ),
    allow_pickle: bool = typer.Option(
        False, "--allow-pickle", help="Accept pickle weights (.bin/.pt), read without code."
    ),
    link: bool = typer.Option(
        False, "--link", help="Record the files where they are instead of copying them."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Import PATH into the model store (all or nothing)."""
    from zhisuan.modelstore import import_model
    from zhisuan.store import open_store

    settings = Settings()
    with user_errors(), _os_errors(), open_store(settings) as store, _progress(as_json) as cb:
        model = import_model(
            store,
            settings,
            path,
            name=name,
            licence=licence,
            task=task,
            allow_pickle=allow_pickle,
            link=link,
            progress=cb,
        )
    if as_json:
        _json(model.to_dict())
        return
    how = "linked" if model.linked else "copied"
    console.print(
        f"imported [bold]{model.name}[/] ({model.format}, {model.task}, "
        f"{_params(model.param_count)} parameters, {_bytes(model.bytes_on_disk)} {how})",
        highlight=False,
    )


@app.command("list")
def list_(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the imported models."""
    from rich.table import Table

    from zhisuan.store import open_store

    settings = Settings()
    with user_errors(), open_store(settings) as store:
        models = store.list_models()
    if as_json:
        _json([m.to_dict() for m in models])
        return
    if not models:
        console.print("no models yet; import one with `zhisuan models import PATH`")
        return
    table = Table()
    table.add_column("name", no_wrap=True, style="bold")
    for header in ("format", "task", "architecture", "dtype"):
        table.add_column(header)
    for header in ("params", "ctx", "size"):
        table.add_column(header, justify="right", no_wrap=True)
    for m in models:
        table.add_row(
            m.name,
            m.format,
            m.task,
            m.architecture or "-",
            m.dtype or "-",
            _params(m.param_count),
            str(m.context_length or "-"),
            _bytes(m.bytes_on_disk),
        )
    console.print(table)


@app.command("show")
def show(
    name: str = typer.Argument(..., help="Model name."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Show everything recorded about one model, with its weight files' sha256."""
    from zhisuan.store import open_store

    settings = Settings()
    with user_errors(), open_store(settings) as store:
        model = store.get_model(name)
    if as_json:
        _json(model.to_dict())
        return
    console.print(_detail_table(model))
    console.print(_files_table(model))


@app.command("rm")
def rm(
    name: str = typer.Argument(..., help="Model name."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Remove a model: its record, and its files unless they were linked."""
    from zhisuan.modelstore import remove_model
    from zhisuan.store import open_store

    settings = Settings()
    with user_errors(), _os_errors(), open_store(settings) as store:
        model = remove_model(store, settings, name)
    if as_json:
        _json({"removed": model.name, "files_deleted": not model.linked})
        return
    note = " (linked files left in place)" if model.linked else ""
    console.print(f"removed [bold]{model.name}[/]{note}", highlight=False)


def _detail_table(model: Model) -> Any:
    from rich.table import Table

    table = Table(show_header=False, title=model.name, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    rows = [
        ("format", model.format),
        ("task", model.task),
        ("licence", model.licence),
        ("architecture", model.architecture),
        ("parameters", f"{_params(model.param_count)} ({model.param_count})"),
        ("layers", model.num_layers),
        ("hidden size", model.hidden_size),
        ("heads", model.num_heads),
        ("kv heads", model.num_kv_heads),
        ("context length", model.context_length),
        ("dtype", model.dtype),
        ("size on disk", f"{_bytes(model.bytes_on_disk)} ({model.bytes_on_disk} bytes)"),
        ("path", model.path + (" (linked)" if model.linked else "")),
        ("imported from", model.source_path),
        ("imported at", model.created_at.isoformat(timespec="seconds")),
    ]
    for key, value in rows:
        table.add_row(key, "-" if value is None else str(value))
    return table


def _files_table(model: Model) -> Any:
    from rich.table import Table

    table = Table()
    table.add_column("weight file", overflow="fold")
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("sha256", overflow="fold")
    for f in model.files:
        table.add_row(f["name"], _bytes(f["bytes"]), f["sha256"])
    return table


@contextlib.contextmanager
def _os_errors() -> Iterator[None]:
    """Environment trouble (permission denied, disk full): one line, exit 1, no traceback."""
    try:
        yield
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        fail(f"{exc.strerror or exc}{where}", "check the path's permissions and free space", 1)


@contextlib.contextmanager
def _progress(quiet: bool) -> Iterator[ProgressCallback | None]:
    """A Rich progress bar on stderr while hashing/copying; yields the import's callback."""
    if quiet or not err_console.is_terminal:
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    )
    task = bar.add_task("reading", total=None)

    def update(file: str, done: int, total: int) -> None:
        bar.update(task, description=file, completed=done, total=total)

    with bar:
        yield update


def _params(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover
