"""``zhisuan logs MODEL``: what a replica's worker writes, read from its log file.

The gateway of this home (or the one at ``--url``) says which file each replica's serving
worker writes (``GET /admin/replicas``, ``log``); with no gateway answering, the files are
found in this home's ``logs`` directory, where ``<model>-<index>.log`` links to the file of the
replica's last serving worker (:mod:`zhisuan.cluster._logs`). Either way the file is read
directly, so the command runs on the gateway's machine, as ``zhisuan serve`` does.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import typer

from zhisuan.cli._common import console, err_console, fail, home_gateway
from zhisuan.cli._tail import follow as follow_file
from zhisuan.cli._tail import last_lines
from zhisuan.cluster import _logs
from zhisuan.settings import Settings

PS_HINT = "`zhisuan ps` lists the replicas"


@dataclass
class _Found:
    """Replica ``index`` of ``model``: where its files are, and what the gateway says of them."""

    model: str
    index: int
    directory: Path
    file: Path | None = None
    """The serving worker's file (None: no worker of the replica serves, or none wrote yet)."""
    link: Path | None = None
    """The link to follow to a successor's file."""
    workers: dict[str, str] = field(default_factory=dict)
    """What writes some of the files, by file name (``ready, pid 42``)."""
    why: tuple[str, str] | None = None
    """Why there is no ``file``: a reason and a hint."""


def logs(
    model: str = typer.Argument(..., help="Deployed model name."),
    replica: int = typer.Option(0, "--replica", min=0, help="Replica index (`#` in zhisuan ps)."),
    lines: int = typer.Option(50, "--lines", "-n", min=0, help="Lines to print from the end."),
    follow: bool = typer.Option(
        False,
        "--follow",
        "-f",
        help="Keep printing new lines, on to a successor's file after a rollout (Ctrl-C stops).",
    ),
    every: bool = typer.Option(
        False, "--all", help="List the replica's log files (current and old), newest first."
    ),
    url: str | None = typer.Option(None, help="Gateway URL \\[default: this home's]."),
) -> None:
    """Print the end of the log of a replica's serving worker (replica 0 by default)."""
    if every and follow:
        fail("--all lists the files and follows none", "give --all or --follow, not both")
    found = _find(Settings(), url, model, replica)
    if every:
        _list(found)
        return
    if found.file is None:
        fail(*found.why or (f"replica {replica} of {model!r} has no log", PS_HINT))
    try:
        text, end = last_lines(found.file, lines)
        typer.echo(text if not text or text.endswith("\n") or follow else text + "\n", nl=False)
        if follow:
            _follow(found, found.file, end)
    except OSError as exc:
        _unreadable(Path(exc.filename) if exc.filename else found.file, exc)


def _follow(found: _Found, path: Path, end: int) -> None:
    """Print what ``path`` (the replica's file) gets after ``end``, until Ctrl-C."""

    def moved(path: Path) -> None:
        err_console.print(
            f"[yellow]note:[/] replica {found.index} of {found.model!r} now writes {path.name} "
            "(a successor took over)",
            highlight=False,
            soft_wrap=True,
        )

    try:
        follow_file(path, end, found.link, lambda text: typer.echo(text, nl=False), moved)
    except KeyboardInterrupt:
        return  # Ctrl-C: the way out, not an error


def _unreadable(path: Path, exc: OSError) -> NoReturn:
    fail(
        f"cannot read {path}: {exc.strerror or exc}",
        "zhisuan logs reads the gateway's files: run it on the gateway's machine, as the user "
        "that runs `zhisuan serve`",
    )


def _find(settings: Settings, url: str | None, model: str, index: int) -> _Found:
    """Replica ``index`` of ``model``: as the gateway lists it, or from the home's files."""
    import httpx

    from zhisuan.cli.serve import admin_headers, refused

    base = url or home_gateway(settings)
    try:
        resp = httpx.get(f"{base}/admin/replicas", timeout=5.0, headers=admin_headers(settings))
    except httpx.HTTPError:
        return _from_files(settings.logs_dir, model, index, base)
    if resp.status_code != 200:
        refused(base, resp)
    return _from_rows(resp.json(), settings.logs_dir, model, index)


def _from_rows(rows: list[dict[str, Any]], home: Path, model: str, index: int) -> _Found:
    """Replica ``index`` of ``model`` as the gateway lists it (``GET /admin/replicas``)."""
    logged = [Path(r["log"]) for r in rows if r.get("log")]
    directory = logged[0].parent if logged else home  # the gateway's home may not be ours
    found = _Found(model, index, directory, link=_logs.link(directory, model, index))
    mine = [r for r in rows if r["model"] == model]
    if not mine:
        deployed = ", ".join(sorted({str(r["model"]) for r in rows})) or "none"
        found.why = (f"{model!r} is not deployed (deployed: {deployed})", _old_hint(found))
        return found
    serving = sorted({int(r.get("replica", 0)) for r in mine if r["state"] != "draining"})
    rows_of = [r for r in mine if int(r.get("replica", 0)) == index]
    for r in rows_of:
        _note(found, r, r["state"])
        if r.get("replacing"):
            _note(found, r["replacing"], f"next, {r['replacing']['state']}")
    # the serving worker's row; a replica scaled away has only its draining worker's
    row = next((r for r in rows_of if r["state"] != "draining"), rows_of[0] if rows_of else None)
    if row is None:
        have = f"{len(serving)}: {', '.join(map(str, serving))}" if serving else "none serving"
        found.why = (f"no replica {index} of {model!r} (it has {have})", _old_hint(found))
    elif "log" not in row:  # a gateway older than the log files: the link names it
        return _from_files(home, model, index, None)
    elif row["log"] is None:
        found.why = (
            f"replica {index} of {model!r} has no log yet (it is {row['state']})",
            "its worker writes one once it starts; " + PS_HINT,
        )
    else:
        found.file = Path(row["log"])
    return found


def _note(found: _Found, row: dict[str, Any], what: str) -> None:
    if row.get("log"):
        pid = f", pid {row['pid']}" if row.get("pid") else ""
        found.workers[Path(row["log"]).name] = f"{what}{pid}"


def _from_files(directory: Path, model: str, index: int, base: str | None) -> _Found:
    """Replica ``index`` of ``model`` from the files in ``directory`` alone (``base``: the
    gateway that did not answer)."""
    link = _logs.link(directory, model, index)
    found = _Found(model, index, directory, link=link)
    hint = f"{PS_HINT} (no gateway answers at {base} to ask)" if base else PS_HINT
    if link.exists():
        found.file = link.resolve()
        found.workers[found.file.name] = "last serving" if base else "serving"
        return found
    have = _logs.indices(directory, model)
    if not have:
        found.why = (f"no log of {model!r} in {directory}", hint)
    elif index not in have:
        found.why = (
            f"no log of replica {index} of {model!r} in {directory} "
            f"(replicas with logs there: {', '.join(map(str, have))})",
            hint,
        )
    else:
        found.why = (f"no worker of replica {index} of {model!r} serves", _old_hint(found))
    return found


def _old_hint(found: _Found) -> str:
    if _logs.files(found.directory, found.model, found.index):
        return f"`zhisuan logs {found.model} --replica {found.index} --all` lists its old files"
    return PS_HINT


def _list(found: _Found) -> None:
    """Print the replica's files, newest first, with what writes each."""
    from rich.table import Table

    paths = _logs.files(found.directory, found.model, found.index)
    if not paths:
        reason, hint = found.why or (f"no log file of replica {found.index}", PS_HINT)
        fail(f"{reason}; it has no log file in {found.directory}", hint)
    console.print(
        f"log files of replica {found.index} of {found.model!r} in {found.directory}:",
        highlight=False,
        soft_wrap=True,
    )
    table = Table("file", "started", "last written", "size", "worker")
    for path in paths:
        try:
            info = path.stat()
        except OSError:
            continue  # removed meanwhile (an old file pruned)
        when = _logs.started(path)
        table.add_row(
            path.name,
            _utc(when) if when else "-",
            _utc(dt.datetime.fromtimestamp(info.st_mtime, dt.UTC)),
            _size(info.st_size),
            found.workers.get(path.name, "stopped"),
        )
    console.print(table)


def _utc(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S")


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"
