"""``zhisuan serve``, ``deploy``, ``undeploy`` and ``ps``."""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from zhisuan._heap import settle_heap
from zhisuan.cli._common import (
    console,
    err_console,
    fail,
    forget,
    gateway_url,
    home_gateway,
    user_errors,
    write_down,
)
from zhisuan.settings import Settings

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command()(serve)
    app.command()(deploy)
    app.command()(undeploy)
    app.command()(ps)


def serve(
    host: str | None = typer.Option(None, help="Listen address \\[default: 127.0.0.1]."),
    port: int | None = typer.Option(None, help="Listen port \\[default: 8000]."),
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
    log_level: str = typer.Option("info", help="uvicorn log level."),
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
    with user_errors():
        settings = Settings(**overrides)
        settings.ensure_home()
        store = open_store(settings)
        if demo:
            from zhisuan.cli._demo import ensure_demo

            ensure_demo(store, settings)
    from zhisuan.gateway._protocol import protocol_for
    from zhisuan.gateway._server import run as run_server
    from zhisuan.gateway.app import auth_enabled, is_loopback

    if not auth_enabled(settings):
        if not is_loopback(settings.host):
            fail(
                f"auth cannot be off when listening on {settings.host}",
                "use --auth on (create keys with `zhisuan keys create`), or --host 127.0.0.1",
            )
        err_console.print(
            "[yellow]warning:[/] auth is off: anyone on this machine can use every model "
            "and the admin API (start with --auth on to require keys)",
            highlight=False,
        )
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    if log_level.lower() != "debug":
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


def deploy(
    model: str = typer.Argument(
        ..., help="Model name (imported, or any name for --engine upstream)."
    ),
    replicas: int = typer.Option(1, min=1, help="Worker processes to run."),
    engine: str | None = typer.Option(
        None, help="transformers | llamacpp | upstream \\[default: by model format]."
    ),
    device: str = typer.Option("cpu", help="cpu or cuda:N."),
    upstream_url: str | None = typer.Option(None, help="Base URL of an OpenAI-compatible server."),
    upstream_key_env: str | None = typer.Option(
        None, help="Name of the environment variable that holds the upstream's API key."
    ),
    upstream_model: str | None = typer.Option(None, help="Model name on the upstream."),
    max_batch: int | None = typer.Option(None, min=1, help="Concurrent sequences per replica."),
    threads: int | None = typer.Option(
        None, min=1, help="CPU threads per replica \\[default: every core of the replica but one]."
    ),
    price_in: float | None = typer.Option(
        None, min=0, help="Price per million prompt tokens (bills by tokens)."
    ),
    price_out: float | None = typer.Option(
        None, min=0, help="Price per million completion tokens (bills by tokens)."
    ),
    cost_per_hour: float | None = typer.Option(
        None, min=0, help="Device cost per hour (bills by busy share when not token-priced)."
    ),
    power_w: float | None = typer.Option(
        None, min=0, help="Device power in watts, for energy estimates without NVML."
    ),
    queue: str = typer.Option(
        "fair",
        help="fair | fifo: the order of requests waiting for the engine (fair: the tenants "
        "take turns; fifo: arrival order).",
    ),
    deadline_s: float | None = typer.Option(
        None,
        min=0.001,
        help="Longest a request billed by --cost-per-hour may run for a caller with a budget "
        "\\[default: ZHISUAN_BUDGET_DEADLINE_S].",
    ),
) -> None:
    """Deploy MODEL (persisted; a running gateway picks it up at once)."""
    from zhisuan.store import open_store

    settings = Settings()
    from zhisuan.engines._turns import QUEUE_ORDERS

    if queue not in QUEUE_ORDERS:
        fail(f"--queue must be {' or '.join(QUEUE_ORDERS)}, not {queue!r}")
    with user_errors():
        _check_device(device)
        with open_store(settings) as store:
            if engine is None:
                found = store.find_model(model)
                engine = (
                    "llamacpp" if found is not None and found.format == "gguf" else "transformers"
                )
            options: dict[str, Any] = {}
            if engine == "upstream":
                if not upstream_url:
                    fail(
                        "an upstream deployment needs --upstream-url",
                        "e.g. --upstream-url http://10.0.0.5:8000/v1",
                    )
                options["base_url"] = upstream_url
                if upstream_key_env:
                    options["api_key_env"] = upstream_key_env
                if upstream_model:
                    options["upstream_model"] = upstream_model
            extra = {
                "max_batch": max_batch,
                "n_threads": threads,
                "price_input_per_mtok": price_in,
                "price_output_per_mtok": price_out,
                "cost_per_hour": cost_per_hour,
                "power_w": power_w,
                "budget_deadline_s": deadline_s,
            }
            options.update({k: v for k, v in extra.items() if v is not None})
            if queue != "fair":
                options["queue"] = queue
            store.put_deployment(
                model, engine=engine, device=device, replicas=replicas, options=options
            )
    console.print(f"deployed [bold]{model}[/] ({engine} on {device}, {replicas} replica(s))")
    _notify(settings)


def undeploy(model: str = typer.Argument(..., help="Deployed model name.")) -> None:
    """Remove MODEL's deployment (its replicas stop)."""
    from zhisuan.store import open_store

    settings = Settings()
    with user_errors(), open_store(settings) as store:
        store.remove_deployment(model)
    console.print(f"undeployed [bold]{model}[/]")
    _notify(settings)


def ps(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    url: str | None = typer.Option(None, help="Gateway URL \\[default: from settings]."),
) -> None:
    """List replicas: model, state, pid, device, cores, endpoint, uptime, restarts."""
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
    for r in rows:
        table.add_row(
            r["model"],
            str(r.get("replica", 0)),
            r.get("engine", ""),
            r["state"],
            str(r["pid"] or "-"),
            r["device"],
            cores.describe(r["cpus"]) if r.get("cpus") else "-",
            r["endpoint"] or "-",
            f"{r['uptime_s']:.0f}s",
            str(r["restarts"]),
        )
    console.print(table)


def _replicas(settings: Settings, url: str | None) -> list[dict[str, Any]]:
    import httpx

    base = url or home_gateway(settings)
    try:
        resp = httpx.get(f"{base}/admin/replicas", timeout=5.0, headers=_admin_headers(settings))
    except httpx.HTTPError:
        err_console.print(
            f"[yellow]note:[/] no gateway answers at {base}: the deployments are listed as "
            "stopped (start one with `zhisuan serve`, or give its address with --url)",
            highlight=False,
            soft_wrap=True,
        )
        return _stopped_rows(settings)
    if resp.status_code != 200:
        _refused(base, resp)
    rows: list[dict[str, Any]] = resp.json()
    return rows


ADMIN_KEY_HINT = (
    "set ZHISUAN_ADMIN_KEY to an admin key (create one with `zhisuan keys create --admin`)"
)


def _refused(base: str, resp: httpx.Response) -> NoReturn:
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


def _admin_headers(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.admin_key}"} if settings.admin_key else {}


def _notify(settings: Settings) -> None:
    """Ask a running gateway to reconcile; no gateway is fine (it reads the store at start)."""
    import httpx

    base = home_gateway(settings)
    try:
        resp = httpx.post(f"{base}/admin/reconcile", timeout=10.0, headers=_admin_headers(settings))
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


def _check_device(device: str) -> None:
    from zhisuan.errors import InvalidParameter

    if device == "cpu" or (device.startswith("cuda:") and device[5:].isdigit()):
        return
    raise InvalidParameter(
        f"unknown device {device!r}", param="device", hint="use cpu or cuda:N (e.g. cuda:0)"
    )
