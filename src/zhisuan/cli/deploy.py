"""``zhisuan deploy`` and ``undeploy``: which models run, where, on which engine, at which
price. Deployments live in the store; a running gateway is asked to reconcile at once.

Engine options without a flag of their own go in ``--option NAME=VALUE`` (repeatable; the
value is read as JSON when it parses, else as a string): a name that neither the engine nor
the gateway reads is refused (:mod:`zhisuan.engines.options`).

A model already deployed keeps every setting the command does not give (engine, device,
replicas, options, prices): ``--clear NAME`` or ``--option NAME=null`` removes an option.
"""

from __future__ import annotations

import json
from typing import Any

import typer

from zhisuan.cli._common import console, fail, user_errors
from zhisuan.cli._share import notify
from zhisuan.limits import MAX_REPLICAS
from zhisuan.settings import Settings

FLAGGED = {
    "max_batch": "--max-batch",
    "n_threads": "--threads",
    "price_input_per_mtok": "--price-in",
    "price_output_per_mtok": "--price-out",
    "cost_per_hour": "--cost-per-hour",
    "power_w": "--power-w",
    "budget_deadline_s": "--deadline-s",
    "queue": "--queue",
    "base_url": "--upstream-url",
    "api_key_env": "--upstream-key-env",
    "upstream_model": "--upstream-model",
}
"""Options that have a flag of their own: ``--option`` may not set them."""


def deploy(
    model: str = typer.Argument(
        ..., help="Model name (imported, or any name for --engine upstream)."
    ),
    replicas: int | None = typer.Option(
        None, help=f"Worker processes to run, 1 to {MAX_REPLICAS} \\[default: 1]."
    ),
    engine: str | None = typer.Option(
        None, help="transformers | llamacpp | upstream \\[default: by model format]."
    ),
    device: str | None = typer.Option(None, help="cpu or cuda:N \\[default: cpu]."),
    upstream_url: str | None = typer.Option(
        None, help="Base URL (http or https) of an OpenAI-compatible server."
    ),
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
    queue: str | None = typer.Option(
        None,
        help="fair | fifo: the order of requests waiting for the engine (fair: the tenants "
        "take turns; fifo: arrival order) \\[default: fair].",
    ),
    deadline_s: float | None = typer.Option(
        None,
        min=0.001,
        help="Longest a request billed by --cost-per-hour may run for a caller with a budget "
        "\\[default: ZHISUAN_BUDGET_DEADLINE_S].",
    ),
    option: list[str] = typer.Option(
        [],
        "--option",
        help="Another engine option, NAME=VALUE (VALUE as JSON if it parses: 2048, false, "
        '"text"; null removes the option), e.g. --option max_prefill_tokens=2048. Repeatable.',
    ),
    clear: list[str] = typer.Option(
        [],
        "--clear",
        help="Remove a setting the deployment keeps: an option's name (max_prefill_tokens) "
        "or a flag's (price-in). Repeatable.",
    ),
) -> None:
    """Deploy MODEL, or change its deployment (persisted; a running gateway picks it up at
    once). A deployed model keeps every setting the command does not give."""
    from zhisuan.modelstore import validate_name
    from zhisuan.store import check_replicas, open_store

    settings = Settings()
    from zhisuan.engines._turns import QUEUE_ORDERS

    if queue is not None and queue not in QUEUE_ORDERS:
        fail(f"--queue must be {' or '.join(QUEUE_ORDERS)}, not {queue!r}")
    with user_errors():
        if device is not None:
            _check_device(device)
        if replicas is not None:
            check_replicas(replicas, model, name="--replicas")
        options = {**_cleared(clear), **_given(option)}
        flagged = {
            "base_url": upstream_url,
            "api_key_env": upstream_key_env,
            "upstream_model": upstream_model,
            "max_batch": max_batch,
            "n_threads": threads,
            "price_input_per_mtok": price_in,
            "price_output_per_mtok": price_out,
            "cost_per_hour": cost_per_hour,
            "power_w": power_w,
            "budget_deadline_s": deadline_s,
        }
        options.update({k: v for k, v in flagged.items() if v is not None})
        if queue is not None:
            options["queue"] = None if queue == QUEUE_ORDERS[0] else queue  # the default: none
        given = {name for name, value in options.items() if value is not None}
        with open_store(settings) as store:
            if engine == "upstream" and store.find_deployment(model) is None:
                validate_name(model)  # a new served name keeps the rule of model names
            dep = store.deploy(
                model,
                engine=engine,
                device=device,
                replicas=replicas,
                options=options,
                check=lambda name, merged: _check(name, merged, given),
            )
    console.print(
        f"deployed [bold]{model}[/] ({dep.engine} on {dep.device}, {dep.replicas} replica(s))"
    )
    notify(settings)


def undeploy(model: str = typer.Argument(..., help="Deployed model name.")) -> None:
    """Remove MODEL's deployment (its replicas stop)."""
    from zhisuan.store import open_store

    settings = Settings()
    with user_errors(), open_store(settings) as store:
        store.remove_deployment(model)
    console.print(f"undeployed [bold]{model}[/]")
    notify(settings)


def _check_device(device: str) -> None:
    from zhisuan.errors import InvalidParameter

    if device == "cpu" or (device.startswith("cuda:") and device[5:].isdigit()):
        return
    raise InvalidParameter(
        f"unknown device {device!r}", param="device", hint="use cpu or cuda:N (e.g. cuda:0)"
    )


def _given(pairs: list[str]) -> dict[str, Any]:
    """The ``--option NAME=VALUE`` pairs as options."""
    from zhisuan.errors import InvalidParameter

    options: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise InvalidParameter(
                f"--option {pair!r} is not NAME=VALUE",
                param="option",
                hint="e.g. --option max_prefill_tokens=2048",
            )
        if name in FLAGGED:
            raise InvalidParameter(
                f"--option {name} has a flag of its own",
                param="option",
                hint=f"use {FLAGGED[name]}",
            )
        try:
            options[name] = json.loads(text)
        except ValueError:
            options[name] = text
    return options


def _cleared(names: list[str]) -> dict[str, Any]:
    """The ``--clear NAME`` names as options to remove (None), a flag's by its option."""
    from zhisuan.engines.options import ENGINE_OPTIONS, known_options
    from zhisuan.errors import InvalidParameter

    by_flag = {flag.removeprefix("--"): name for name, flag in FLAGGED.items()}
    every = set().union(*(known_options(engine) for engine in ENGINE_OPTIONS))
    cleared: dict[str, Any] = {}
    for raw in names:
        name = by_flag.get(raw.removeprefix("--"), raw)
        if name not in every:
            raise InvalidParameter(
                f"--clear {raw!r}: no deployment option or flag is called that",
                param="clear",
                hint="name an option (--clear max_prefill_tokens) or a flag (--clear price-in)",
            )
        cleared[name] = None
    return cleared


def _check(engine: str, options: dict[str, Any], given: set[str]) -> None:
    """Options every reader of them can use: known names, and values the gateway reads.
    ``given`` are those this command sets; the others are kept from the deployment."""
    from zhisuan.engines.options import check_deployment, known_options
    from zhisuan.errors import InvalidParameter

    flagged = sorted(set(options) & given & set(FLAGGED) - known_options(engine))
    if flagged:
        raise InvalidParameter(
            f"{FLAGGED[flagged[0]]} does not apply to the {engine} engine", param="option"
        )
    check_deployment(
        engine, options, given, param="option", remove=lambda name: f"remove it with --clear {name}"
    )
