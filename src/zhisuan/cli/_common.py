"""Helpers every command group shares: consoles, error exit, the gateway's address."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import NoReturn

import typer
from rich.console import Console

from zhisuan.errors import ZhisuanError

PIPED_WIDTH = 200  # piped output keeps whole table cells instead of ellipses

console = Console(width=None if sys.stdout.isatty() else PIPED_WIDTH)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else PIPED_WIDTH)


def fail(message: str, hint: str | None = None, code: int = 2) -> NoReturn:
    """Print a one-line reason (and a hint) to stderr and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    if hint:
        err_console.print(f"[yellow]hint:[/] {hint}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn :class:`ZhisuanError` into :func:`fail` (no traceback for user mistakes)."""
    try:
        yield
    except ZhisuanError as err:
        fail(err.message, err.hint)


def gateway_url(host: str, port: int) -> str:
    """Base URL of a gateway listening on ``host:port`` (wildcard binds map to loopback)."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"
