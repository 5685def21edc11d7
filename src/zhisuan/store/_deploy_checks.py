"""Checks of what a deployment carries: its engine, the model's format, an upstream's
address and the replica count. The CLI and the admin API meet them through
:meth:`zhisuan.store.Store.deploy`; the CLI also calls :func:`check_replicas` first, to name
its flag."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from zhisuan.errors import InvalidParameter
from zhisuan.limits import MAX_REPLICAS
from zhisuan.store.models import ENGINES, FORMAT_ENGINES


def check_replicas(replicas: int, model: str, *, name: str = "replicas") -> None:
    """Refuse a replica count outside 1 to :data:`MAX_REPLICAS`.

    Args:
        replicas: the count asked for.
        model: the deployment's served name, for the hint.
        name: what the caller calls the count (``--replicas`` on the command line).

    Raises:
        InvalidParameter: fewer than one replica (the hint says how to undeploy), or more
            than :data:`MAX_REPLICAS`.
    """
    if 1 <= replicas <= MAX_REPLICAS:
        return
    if replicas < 1:
        hint = (
            f"to stop serving {model}, undeploy it: `zhisuan undeploy {model}` "
            f"(DELETE /admin/deployments/{model})"
        )
    else:
        hint = (
            f"give {name} from 1 to {MAX_REPLICAS}, the most one deployment runs; a larger "
            "--max-batch (options.max_batch) serves more requests per replica"
        )
    raise InvalidParameter(
        f"{name} must be from 1 to {MAX_REPLICAS}, not {replicas}", param="replicas", hint=hint
    )


def known_engine(engine: str) -> None:
    """Refuse an engine that is not one of :data:`ENGINES`."""
    if engine not in ENGINES:
        raise InvalidParameter(
            f"unknown engine {engine!r}",
            param="engine",
            hint=f"choose one of: {', '.join(ENGINES)}",
        )


def check_format(model_name: str, fmt: str, engine: str) -> None:
    """Refuse a local engine that cannot run the model's format."""
    runs = FORMAT_ENGINES.get(fmt)
    if runs is not None and runs != engine:
        kind = "a GGUF file" if fmt == "gguf" else "an HF-format directory"
        raise InvalidParameter(
            f"model {model_name!r} is {kind}, which the {engine} engine cannot run",
            param="engine",
            hint=f"deploy it on {runs} (leave --engine out to get it)",
        )


def check_base_url(url: Any) -> None:
    """Refuse an upstream's ``base_url`` that is not an http(s) address with a host."""
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidParameter(
            "an upstream deployment needs a base_url, the http(s) address of an "
            f"OpenAI-compatible server: {'none was given' if url is None else f'not {url!r}'}",
            param="options.base_url",
            hint="e.g. --upstream-url http://10.0.0.5:8000/v1 (options.base_url in the API)",
        )
