"""Load a GGUF file into a :class:`LlamaCppEngine` (options: see the package docstring)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from zhisuan.engines._turns import fair_option
from zhisuan.engines.base import EngineInfo, cpu_threads
from zhisuan.engines.llamacpp._engine import _POOLING, INSTALL_HINT, LlamaCppEngine
from zhisuan.errors import EngineUnavailable, InvalidParameter

logger = logging.getLogger(__name__)


def load(
    model_path: Path, *, model_name: str, device: str, options: dict[str, Any]
) -> LlamaCppEngine:
    """Load a GGUF file with llama.cpp.

    Args:
        model_path: the ``.gguf`` file.
        model_name: the public model name.
        device: ``cpu`` (GPU offload only through ``n_gpu_layers`` on a GPU build).
        options: see the module docstring.

    Returns:
        The loaded engine.

    Raises:
        EngineUnavailable: llama-cpp-python is not installed (with the install hint).
        InvalidParameter: the path is not a GGUF file or an option is malformed.
    """
    try:
        from llama_cpp import Llama
    except ImportError as exc:
        raise EngineUnavailable(
            f"the llamacpp engine needs llama-cpp-python: {INSTALL_HINT}",
            hint=INSTALL_HINT,
        ) from exc
    path = Path(model_path)
    if not path.is_file():
        raise InvalidParameter(f"{path} is not a GGUF file", param="model_path")
    fair = fair_option(options)
    embedding = bool(options.get("embedding", False))
    pooling = options.get("pooling")
    if pooling is not None and pooling not in _POOLING:
        raise InvalidParameter(f"pooling must be one of {', '.join(_POOLING)}", param="pooling")
    extra: dict[str, Any] = {"pooling_type": _POOLING[pooling]} if pooling else {}
    try:
        llm = Llama(
            model_path=str(path),
            n_ctx=int(options.get("n_ctx", 0)),  # 0: the GGUF's training context
            n_threads=cpu_threads(options.get("n_threads")),
            n_batch=int(options.get("n_batch", 512)),
            n_gpu_layers=int(options.get("n_gpu_layers", 0)),
            embedding=embedding,
            verbose=False,
            **extra,
        )
    except (ValueError, TypeError) as exc:
        raise InvalidParameter(f"llama.cpp cannot load {path}: {exc}") from exc
    template = options.get("chat_template") or llm.metadata.get("tokenizer.chat_template")
    info = EngineInfo(
        model=model_name,
        engine="llamacpp",
        task="embedding" if embedding else "chat",
        context_length=int(llm.n_ctx()),
        device=device,
        logprobs=not embedding,  # from a logits processor on the engine's loop
    )
    logger.info("loaded %s: n_ctx=%s, embedding=%s", path.name, info.context_length, embedding)
    normalize = bool(options.get("normalize", True))
    return LlamaCppEngine(llm, info, template, normalize=normalize, fair=fair)
