"""``zhisuan serve``, ``deploy``, ``undeploy`` and ``ps`` (and the registration of ``logs``)."""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from zhisuan._heap import settle_heap
from zhisuan.cli._common import (
    claim_address,
    console,
    err_console,
    fail,
    forget,
    gateway_url,
    home_gateway,
    refuse_second_gateway,
    user_errors,
    write_down,
)
from zhisuan.settings import Settings

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
"""uvicorn's log levels, which ``--log-level`` takes."""


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    from zhisuan.cli.deploy import deploy, undeploy
    from zhisuan.cli.logs import logs

    app.command()(serve)
    app.command()(deploy)
    app.command()(undeploy)
    app.command()(ps)
    app.command()(logs)


def serve(
    host: str | None = typer.Option(None, help="Listen address \\[default: 127.0.0.1]."),
    port: int | None = typer.Option(None, min=0, max=65535, help="Listen port \\[default: 8000]."),
    demo: bool = typer.Option(False, "--demo", help="Deploy the demo models if none exist."),
    auth: str | None = typer.Option(
        None, help="on | off \\[default: on unless listening on loopback]."
    ),
    metrics: str | None = typer.Option(
        None, help="open | admin: who may read /metrics with auth on \\[default: open]."
    ),
    cpu_pinning: str | None = typer.Option(
        None,
        help="auto | off \\[default: auto: the gateway keeps a core, CPU replicas share the rest].",
    ),
    log_level: str = typer.Option("info", help=f"uvicorn log level: {' | '.join(LOG_LEVELS)}."),
    access_log: bool = typer.Option(
        False,
        "--access-log/--no-access-log",
        help="Log a line per HTTP request (every proxied request has a usage record anyway).",
    ),
) -> None:
    """Start the gateway and every deployed replica."""
    from zhisuan.gateway import create_app
    from zhisuan.store import open_store

    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    if auth is not None:
        if auth not in ("on", "off"):
            fail(f"--auth must be on or off, not {auth!r}")
        overrides["auth"] = auth
    if metrics is not None:
        if metrics not in ("open", "admin"):
            fail(f"--metrics must be open or admin, not {metrics!r}")
        overrides["metrics_access"] = metrics
    if cpu_pinning is not None:
        if cpu_pinning not in ("auto", "off"):
            fail(f"--cpu-pinning must be auto or off, not {cpu_pinning!r}")
        overrides["cpu_pinning"] = cpu_pinning
    log_level = log_level.lower()
    if log_level not in LOG_LEVELS:
        fail(f"--log-level must be one of {', '.join(LOG_LEVELS)}, not {log_level!r}")
    from zhisuan.gateway._protocol import protocol_for
    from zhisuan.gateway._server import run as run_server
    from zhisuan.gateway.app import auth_enabled, is_loopback

    with user_errors():
        settings = Settings(**overrides)
    # Every refusal comes before the store is touched or a replica starts.
    if not auth_enabled(settings) and not is_loopback(settings.host):
        fail(
            f"auth cannot be off when listening on {settings.host}",
            "use --auth on (create keys with `zhisuan keys create`), or --host 127.0.0.1",
        )
    refuse_second_gateway(settings)
    settings.port = claim_address(settings.host, settings.port)  # port 0: the one it gets
    with user_errors():
        settings.ensure_home()
        store = open_store(settings)
        if demo:
            from zhisuan.cli._demo import ensure_demo

            ensure_demo(store, settings)
    if not auth_enabled(settings):
        err_console.print(
            "[yellow]warning:[/] auth is off: anyone on this machine can use every model "
            "and the admin API (start with --auth on to require keys)",
            highlight=False,
        )
    from uvicorn.config import LOG_LEVELS as LEVEL_NUMBERS  # "trace" is uvicorn's own

    logging.basicConfig(
        level=LEVEL_NUMBERS[log_level], format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    if log_level not in ("debug", "trace"):
        # httpx logs every request at INFO: the replicas' readiness polls, a line every 50 ms
        logging.getLogger("httpx").setLevel(logging.WARNING)
    from zhisuan.cluster import cores
    from zhisuan.cluster.local import LocalBackend

    layout = cores.plan(settings.cpu_pinning)
    if layout is not None:
        cores.pin(os.getpid(), layout.gateway)
    app = create_app(settings, store=store, backend=LocalBackend(settings, layout))
    console.print(
        f"zhisuan gateway on {gateway_url(settings.host, settings.port)} (home {settings.home})",
        highlight=False,
    )
    if layout is not None:
        console.print(
            f"gateway on cores {cores.describe(layout.gateway)}; "
            f"CPU replicas on {cores.describe(layout.workers)} (--cpu-pinning off to stop)",
            highlight=False,
        )
    settle_heap()
    run_server(
        app,
        on_started=lambda: write_down(settings),  # so this home's commands find it
        on_stopped=lambda: forget(settings),
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        access_log=access_log,
        http=protocol_for(app.serve_hot, app.serve_now),
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
    )


def ps(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    url: str | None = typer.Option(None, help="Gateway URL \\[default: from settings]."),
) -> None:
    """List replicas: model, state, pid, device, cores, endpoint, uptime, restarts (an old
    worker still finishing its requests after a change or an undeploy is ``draining``)."""
    settings = Settings()
    rows = _replicas(settings, url)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    from zhisuan.cluster import cores

    table = Table(
        "model", "#", "engine", "state", "pid", "device", "cores", "endpoint", "uptime", "restarts"
    )
    replacing, draining = [], []
    for r in rows:
        successor = r.get("replacing")
        if successor:
            replacing.append((r, successor))
        if r["state"] == "draining":
            draining.append(r)
        table.add_row(
            r["model"],
            str(r.get("replica", 0)),
            r.get("engine", ""),
            f"{r['state']}, next {successor['state']}" if successor else r["state"],
            str(r["pid"] or "-"),
            r["device"],
            cores.describe(r["cpus"]) if r.get("cpus") else "-",
            r["endpoint"] or "-",
            f"{r['uptime_s']:.0f}s",
            str(r["restarts"]),
        )
    console.print(table)
    for r, successor in replacing:  # a changed spec rolling out: the old worker still serves
        why = f": {successor['last_error']}" if successor.get("last_error") else ""
        console.print(
            f"{r['model']} #{r.get('replica', 0)}: pid {r['pid']} serves until a worker with "
            f"the new settings is ready; that one is {successor['state']} "
            f"(restarts {successor['restarts']}){why}",
            highlight=False,
            soft_wrap=True,
        )
    for r in draining:  # out of routing: a successor serves, or the model is undeployed
        log = f"; it writes {r['log']}" if r.get("log") else ""
        console.print(
            f"{r['model']} #{r.get('replica', 0)}: pid {r['pid'] or '-'} takes no new request "
            f"and stops once its {r.get('outstanding', 0)} request(s) in flight are done{log}",
            highlight=False,
            soft_wrap=True,
        )


def _replicas(settings: Settings, url: str | None) -> list[dict[str, Any]]:
    import httpx

    base = url or home_gateway(settings)
    try:
        resp = httpx.get(f"{base}/admin/replicas", timeout=5.0, headers=admin_headers(settings))
    except httpx.HTTPError:
        err_console.print(
            f"[yellow]note:[/] no gateway answers at {base}: the deployments are listed as "
            "stopped (start one with `zhisuan serve`, or give its address with --url)",
            highlight=False,
            soft_wrap=True,
        )
        return _stopped_rows(settings)
    if resp.status_code != 200:
        refused(base, resp)
    rows: list[dict[str, Any]] = resp.json()
    return rows


ADMIN_KEY_HINT = (
    "set ZHISUAN_ADMIN_KEY to an admin key (create one with `zhisuan keys create --admin`)"
)


def refused(base: str, resp: httpx.Response) -> NoReturn:
    """Fail with the gateway's own reason, and what to set when it wants an admin key."""
    try:
        reason = str(resp.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        reason = resp.text[:200]
    if resp.status_code in (401, 403):
        fail(
            f"the gateway at {base} needs an admin key (HTTP {resp.status_code}): {reason}",
            ADMIN_KEY_HINT,
        )
    fail(f"the gateway at {base} answered {resp.status_code}: {reason}")


def _stopped_rows(settings: Settings) -> list[dict[str, Any]]:
    """No gateway is running: the deployments, all stopped."""
    from zhisuan.store import open_store

    with user_errors(), open_store(settings) as store:
        return [
            {
                "model": d.model_name,
                "replica": i,
                "engine": d.engine,
                "state": "stopped",
                "pid": None,
                "device": d.device,
                "endpoint": None,
                "uptime_s": 0.0,
                "restarts": 0,
            }
            for d in store.list_deployments()
            for i in range(d.replicas)
        ]


def admin_headers(settings: Settings) -> dict[str, str]:
    """The headers of an admin call: the admin key's, where the settings give one."""
    return {"Authorization": f"Bearer {settings.admin_key}"} if settings.admin_key else {}


def _notify(settings: Settings) -> None:
    """Ask a running gateway to reconcile; no gateway is fine (it reads the store at start)."""
    import httpx

    base = home_gateway(settings)
    try:
        resp = httpx.post(f"{base}/admin/reconcile", timeout=10.0, headers=admin_headers(settings))
    except httpx.HTTPError:
        logger.debug("no gateway at %s to notify", base)
        return
    if resp.is_error:
        err_console.print(
            f"[yellow]warning:[/] the gateway at {base} did not reload (HTTP {resp.status_code}):"
            " it applies the change to deployments when it restarts, to keys and limits within"
            " seconds",
            highlight=False,
            soft_wrap=True,
        )
        if resp.status_code in (401, 403):
            err_console.print(
                f"[yellow]hint:[/] {ADMIN_KEY_HINT}",
                highlight=False,
                soft_wrap=True,
            )
