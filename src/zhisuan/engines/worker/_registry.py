"""Engine kinds a worker can load, imported lazily by name.

Importing an engine module can be heavy (``transformers`` pulls in torch), so the
registry holds ``"module:function"`` strings and imports only the selected one. A worker
for ``llamacpp`` or ``upstream`` therefore never imports torch. Any other
``"package.module:function"`` string is accepted too (plugins, test fakes).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeAlias

from zhisuan.engines.base import Engine
from zhisuan.engines.worker._passthrough import PassThrough
from zhisuan.errors import EngineUnavailable, InvalidParameter

AnyEngine: TypeAlias = Engine | PassThrough
Loader: TypeAlias = Callable[..., AnyEngine]

ENGINES: dict[str, str] = {
    "transformers": "zhisuan.engines.transformers:load",
    "llamacpp": "zhisuan.engines.llamacpp:load",
    "upstream": "zhisuan.engines.upstream:load",
}


def resolve(name: str) -> Loader:
    """The ``load`` factory of engine kind ``name``.

    Args:
        name: a key of :data:`ENGINES` or a ``"package.module:function"`` string.

    Returns:
        The factory ``load(model_path, *, model_name, device, options)``.

    Raises:
        InvalidParameter: ``name`` is neither a known kind nor a ``module:function``.
        EngineUnavailable: the engine module cannot be imported (e.g. an optional extra
            is not installed).
    """
    target = ENGINES.get(name, name)
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise InvalidParameter(
            f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}", param="engine"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EngineUnavailable(f"engine {name!r} cannot be imported: {exc}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise InvalidParameter(f"{target} is not a callable engine factory", param="engine")
    loader: Loader = factory
    return loader


def load_engine(
    name: str,
    model_path: Path | None,
    *,
    model_name: str,
    device: str,
    options: dict[str, Any],
) -> AnyEngine:
    """Import engine kind ``name`` and load a model with it.

    Args:
        name: engine kind (see :func:`resolve`).
        model_path: weights (a directory or a GGUF file); None for ``upstream``.
        model_name: the public model name.
        device: ``cpu`` or ``cuda:N``.
        options: engine-specific options.

    Returns:
        The loaded engine (an :class:`Engine` or a :class:`PassThrough`).

    Raises:
        zhisuan.errors.ZhisuanError: the engine cannot be imported or refused the model.
    """
    factory = resolve(name)
    engine = factory(model_path, model_name=model_name, device=device, options=options)
    if not isinstance(engine, Engine | PassThrough):
        raise EngineUnavailable(f"engine {name!r} returned {type(engine).__name__}, not an Engine")
    return engine
