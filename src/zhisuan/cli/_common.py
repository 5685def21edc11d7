"""Helpers every command group shares: consoles, error exit, the gateway's address."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console

from zhisuan.errors import ZhisuanError
from zhisuan.settings import Settings

PIPED_WIDTH = 200  # piped output keeps whole table cells instead of ellipses

console = Console(width=None if sys.stdout.isatty() else PIPED_WIDTH)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else PIPED_WIDTH)


def fail(message: str, hint: str | None = None, code: int = 2) -> NoReturn:
    """Print a one-line reason (and a hint) to stderr and exit with ``code``."""
    _say(message, hint)
    raise typer.Exit(code)


def bad_settings(err: ValidationError) -> NoReturn:
    """Exit 2 with a one-line reason naming the ``ZHISUAN_*`` variable that ``Settings()``
    refused, and a hint; for the entry point, which catches ``err`` outside any command."""
    problems = err.errors(include_url=False)
    names = [f"ZHISUAN_{p['loc'][0]}".upper() if p["loc"] else "ZHISUAN_*" for p in problems]
    first, name = problems[0], names[0]
    reason = first["msg"][:1].lower() + first["msg"][1:]
    shown = name if not first["loc"] or "key" in name.lower() else f"{name}={first['input']!r}"
    also = [n for n in dict.fromkeys(names) if n != name]
    more = f" (also {', '.join(also)})" if also else ""
    _say(
        f"invalid setting {shown}: {reason}{more}",
        f"correct {name} in the environment, or unset it for the default",
    )
    raise SystemExit(2)


def _say(message: str, hint: str | None) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    if hint:
        err_console.print(f"[yellow]hint:[/] {hint}", highlight=False, soft_wrap=True)


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


GATEWAY_FILE = "gateway.json"
"""Where a running ``zhisuan serve`` writes its address and pid, in its home, so that the
other commands of that home find it on any port."""


def home_gateway(settings: Settings) -> str:
    """The URL of this home's gateway: the address the settings give where a port was
    given (``ZHISUAN_PORT``), else the one a running ``zhisuan serve`` of this home wrote
    down, else the default."""
    if "port" not in settings.model_fields_set:
        written = _written(settings.home / GATEWAY_FILE)
        if written is not None:
            return written
    return gateway_url(settings.host, settings.port)


def write_down(settings: Settings) -> None:
    """Write this process's gateway address into its home (once it listens there)."""
    path = settings.home / GATEWAY_FILE
    spare = path.with_name(f".{GATEWAY_FILE}.{os.getpid()}")
    url = gateway_url(settings.host, settings.port)
    spare.write_text(json.dumps({"url": url, "pid": os.getpid()}) + "\n")
    spare.replace(path)  # whole or not at all


def forget(settings: Settings) -> None:
    """Remove the address :func:`write_down` wrote, unless another gateway's replaced it."""
    path = settings.home / GATEWAY_FILE
    if _written(path, pid=os.getpid()) is not None:
        path.unlink(missing_ok=True)


def refuse_second_gateway(settings: Settings) -> None:
    """Fail when this home's gateway file names a gateway that is alive and answers: a
    second ``zhisuan serve`` of one home would take over its address file."""
    import httpx

    path = settings.home / GATEWAY_FILE
    url, entry = _written(path), _entry(path)
    if url is None or entry is None:
        return
    try:
        httpx.get(f"{url}/health", timeout=2.0)
    except httpx.HTTPError:
        return  # its pid lives on in another process: the file is stale
    fail(
        f"a gateway of this home ({settings.home}) already runs at {url}",
        f"stop it first (pid {entry[1]}), or give this one a home of its own with ZHISUAN_HOME",
    )


def claim_address(host: str, port: int) -> int:
    """Fail unless ``host:port`` can be listened on; return the port, a free one for 0.

    Binds a test socket to each address ``host`` stands for (as the server will), so a
    busy port is refused before any replica starts; port 0 is resolved here, so the
    address written down is the one listened on.
    """
    try:
        addresses = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        fail(f"cannot listen on {host!r}: {exc.strerror}", _HOST_HINT)
    missing: list[OSError] = []
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind((address[0], port, *address[2:]))
            except OSError as exc:
                if exc.errno != errno.EADDRNOTAVAIL:
                    _unusable(host, port, exc)
                missing.append(exc)  # a family not enabled here: the server leaves it out too
                continue
            port = int(sock.getsockname()[1])
    if len(missing) == len(addresses):
        _unusable(host, port, missing[0])
    return port


_HOST_HINT = "give --host an address of this machine, e.g. 127.0.0.1 or 0.0.0.0"


def _unusable(host: str, port: int, exc: OSError) -> NoReturn:
    if exc.errno == errno.EADDRINUSE:
        fail(
            f"port {port} on {host} is already in use",
            "stop what listens there, or choose another --port (--port 0 picks a free one)",
        )
    if exc.errno == errno.EACCES:
        fail(
            f"no permission to listen on port {port} of {host}",
            "choose a --port of 1024 or more",
        )
    fail(f"cannot listen on {host} port {port}: {exc.strerror or exc}", _HOST_HINT)


def _entry(path: Path) -> tuple[str, int] | None:
    """The URL and pid in ``path``, if it holds them."""
    try:
        found = json.loads(path.read_text())
        return str(found["url"]), int(found["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _written(path: Path, pid: int | None = None) -> str | None:
    """The URL in ``path`` if the process that wrote it is alive (and is ``pid``)."""
    entry = _entry(path)
    if entry is None:
        return None
    url, owner = entry
    if pid is not None and owner != pid:
        return None
    try:
        os.kill(owner, 0)
    except ProcessLookupError:
        return None  # a gateway killed without its cleanup
    except PermissionError:
        pass  # alive, another user's
    return url
