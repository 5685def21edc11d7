"""``zhisuan``: the entry point. Command modules import their layers lazily."""

from __future__ import annotations

import typer

from zhisuan import __version__
from zhisuan.cli import serve as serve_cmds

app = typer.Typer(
    name="zhisuan",
    help="zhisuan (智算): a private Model-as-a-Service on your own accelerators.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
serve_cmds.register(app)


def _mount() -> None:
    from zhisuan.cli import catalog, models, plan

    app.add_typer(models.app, name="models", help="Import, list, show and remove models.")
    app.add_typer(plan.app, name="plan", help="Plan training and serving: time, memory, money.")
    app.add_typer(catalog.app, name="catalog", help="Accelerators and model architectures.")


def _version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """zhisuan (智算): a private Model-as-a-Service on your own accelerators."""


_mount()


def main() -> None:
    """Console-script entry point."""
    app()
