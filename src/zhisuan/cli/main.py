"""``zhisuan``: the entry point.

Command groups are imported only when they are the one being run (or for ``--help``),
so ``zhisuan plan …`` does not pay for the serving stack's imports.
"""

from __future__ import annotations

import importlib
import sys

import typer

from zhisuan import __version__

GROUPS: dict[str, tuple[str, str]] = {
    "models": ("zhisuan.cli.models", "Import, list, show and remove models."),
    "plan": ("zhisuan.cli.plan", "Plan training and serving: time, memory, money."),
    "catalog": ("zhisuan.cli.catalog", "Accelerators and model architectures."),
    "tenants": ("zhisuan.cli.tenants", "Tenants and their limits."),
    "keys": ("zhisuan.cli.keys", "API keys: create, list, revoke."),
    "usage": ("zhisuan.cli.usage", "Usage per request, or totals --by."),
}
COMMANDS = ("serve", "deploy", "undeploy", "ps", "logs")


def _version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


def build(argv: list[str] | None = None) -> typer.Typer:
    """The root app, with the groups that ``argv`` needs (all of them when unsure).

    Args:
        argv: the command line after the program name (default: ``sys.argv[1:]``).

    Returns:
        The Typer app to run.
    """
    args = sys.argv[1:] if argv is None else argv
    first = next((a for a in args if not a.startswith("-")), None)
    app = typer.Typer(
        name="zhisuan",
        help="zhisuan (智算): a private Model-as-a-Service on your own accelerators.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )

    @app.callback()
    def _root(
        version: bool = typer.Option(
            False, "--version", callback=_version, is_eager=True, help="Print the version."
        ),
    ) -> None:
        """zhisuan (智算): a private Model-as-a-Service on your own accelerators."""

    if first in GROUPS:
        wanted = [first]
    elif first in COMMANDS:
        wanted = []
    else:
        wanted = list(GROUPS)
    if first not in GROUPS:
        from zhisuan.cli import serve

        serve.register(app)
    for name in wanted:
        module, help_text = GROUPS[name]
        app.add_typer(importlib.import_module(module).app, name=name, help=help_text)
    return app


def main() -> None:
    """Console-script entry point.

    Every command builds ``Settings()`` from the environment; a variable it refuses (say
    ``ZHISUAN_PORT=abc``) ends here, whichever command it was, as a one-line error.
    """
    from pydantic import ValidationError

    from zhisuan.cli._common import bad_settings
    from zhisuan.settings import Settings

    try:
        build()()
    except ValidationError as err:
        if err.title != Settings.__name__:
            raise  # not the environment's mistake but a bug: keep its traceback
        bad_settings(err)
