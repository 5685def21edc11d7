"""The deployment options each engine reads, so that a misspelt one is refused, not ignored.

A deployment's ``options`` reach its workers as ``--options`` JSON (each engine's own, in its
docstring) and the gateway (prices, power, the budget deadline, the context length, the
queue order: :data:`zhisuan.cluster.base.GATEWAY_OPTIONS`). An engine ignores what it does
not know, so :func:`check_options` is where a name no one reads is caught: ``zhisuan deploy
--option`` and the admin API's deployments call it.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from zhisuan.cluster.base import GATEWAY_OPTIONS
from zhisuan.engines._turns import QUEUE_ORDERS
from zhisuan.errors import InvalidParameter

COMMON = frozenset({"context_length", "queue"})
"""Read by the gateway's admission (``context_length``) and every local engine's queue."""
UNKNOWN_CONTEXT_COMPLETION = 4096
"""The completion budget of a request without ``max_tokens`` to a deployment whose options
set no ``context_length``: the gateway reserves this much for it (it knows no context to
size it by), and the deployment's workers end it there (:func:`completion_cap`)."""
ENGINE_OPTIONS: dict[str, frozenset[str]] = {
    "transformers": frozenset(
        {
            "task",
            "dtype",
            "max_batch",
            "max_prefill_tokens",
            "attn_implementation",
            "embed_batch_size",
            "embed_group",
            "n_threads",
        }
    ),
    "llamacpp": frozenset(
        {
            "n_ctx",
            "n_threads",
            "n_batch",
            "embedding",
            "pooling",
            "normalize",
            "chat_template",
            "n_gpu_layers",
        }
    ),
    "upstream": frozenset(
        {"base_url", "api_key_env", "upstream_model", "timeout", "task", "check", "stream_usage"}
    ),
}
"""The options each engine's loader reads, besides :data:`COMMON` and the gateway's."""


def completion_cap(options: Mapping[str, Any]) -> int | None:
    """The most tokens a worker of a deployment with ``options`` lets a request without
    ``max_tokens`` generate: :data:`UNKNOWN_CONTEXT_COMPLETION` where they set no
    ``context_length``, else None (the rest of the context, which the gateway reserves)."""
    return None if options.get("context_length") else UNKNOWN_CONTEXT_COMPLETION


def known_options(engine: str) -> frozenset[str]:
    """Every option a deployment on ``engine`` may set."""
    return ENGINE_OPTIONS.get(engine, frozenset()) | COMMON | GATEWAY_OPTIONS


def check_options(engine: str, names: Iterable[str]) -> None:
    """Refuse option names that neither ``engine`` nor the gateway reads (an engine that
    does not exist is left to the store to refuse).

    Raises:
        InvalidParameter: the first unknown name, with the closest known one if any is
            close, and the known ones as a hint.
    """
    if engine not in ENGINE_OPTIONS:
        return  # not an engine: refused where deployments are stored
    known = known_options(engine)
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            guess = f"; did you mean {close[0]}?" if close else ""
            raise InvalidParameter(
                f"no {engine} deployment option is called {name!r}{guess}",
                param="options",
                hint=f"{engine} options: {', '.join(sorted(known))}",
            )


METERED_OPTIONS = ("price_input_per_mtok", "price_output_per_mtok", "cost_per_hour", "power_w")
BOOLEAN_OPTIONS = ("embed_group", "embedding", "normalize", "check", "stream_usage")
"""Options the engines read as true or false (a string such as ``"False"`` would be true)."""


def check_deployment(
    engine: str,
    options: Mapping[str, Any],
    given: set[str],
    *,
    param: str,
    remove: Callable[[str], str],
) -> None:
    """The options a changed deployment on ``engine`` would store: those ``given`` by the
    change and those kept from before, known names and values the gateway can use.

    Args:
        engine: the deployment's engine.
        options: every option it would store.
        given: the names the change itself sets (the others are kept).
        param: where the options came from, for the error.
        remove: how the caller removes a kept option, for the hint.

    Raises:
        InvalidParameter: a kept option the engine does not read, an unknown name, or a
            value the gateway cannot use.
    """
    kept = sorted(set(options) - given - known_options(engine))
    if kept:
        raise InvalidParameter(
            f"the deployment keeps option {kept[0]!r}, which the {engine} engine does not read",
            param=param,
            hint=remove(kept[0]),
        )
    check_options(engine, options)  # an unknown engine: the store says so
    try:
        check_values(options)
    except ValueError as exc:
        raise InvalidParameter(str(exc), param=param) from None


def check_values(options: Mapping[str, Any]) -> None:
    """The options the gateway itself reads (prices, power, deadline, context, queue order)
    must have values it can use, and the boolean ones (:data:`BOOLEAN_OPTIONS`) a boolean.

    Raises:
        ValueError: the first that has not, with what it must be.
    """
    for name in METERED_OPTIONS:
        value = options.get(name)
        if value is not None and not _number(value, minimum=0):
            raise ValueError(f"options.{name} must be a number >= 0, not {value!r}")
    deadline = options.get("budget_deadline_s")
    if deadline is not None and not (_number(deadline, minimum=0) and deadline > 0):
        raise ValueError(f"options.budget_deadline_s must be a number > 0, not {deadline!r}")
    length = options.get("context_length")
    if length is not None and not (isinstance(length, int) and _number(length, minimum=1)):
        raise ValueError(f"options.context_length must be an integer >= 1, not {length!r}")
    order = options.get("queue")
    if order is not None and order not in QUEUE_ORDERS:
        orders = " or ".join(QUEUE_ORDERS)
        raise ValueError(f"options.queue must be {orders}, not {order!r}")
    for name in BOOLEAN_OPTIONS:
        value = options.get(name)
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"options.{name} must be true or false, not {value!r}")


def _number(value: Any, *, minimum: float) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= minimum
    )
