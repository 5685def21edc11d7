"""Loading an HF directory into a :class:`TransformersEngine` (offline, no remote code)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from zhisuan.engines._turns import fair_option
from zhisuan.engines.base import EngineInfo, Task, cpu_threads
from zhisuan.engines.transformers._embed import PoolingSpec, read_pooling
from zhisuan.engines.transformers._engine import TransformersEngine
from zhisuan.errors import InvalidParameter

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def load(
    model_path: Path, *, model_name: str, device: str, options: dict[str, Any]
) -> TransformersEngine:
    """Load an HF model directory offline and wrap it in a :class:`TransformersEngine`.

    Files are read with ``local_files_only=True`` and ``trust_remote_code=False``: nothing
    is downloaded and no code from the directory runs.

    Args:
        model_path: the HF-format directory (``config.json``, safetensors, tokenizer).
        model_name: the public model name (``/v1/models`` id).
        device: ``"cpu"`` or ``"cuda:N"``.
        options: optional settings:
            ``task`` (``"chat"`` | ``"embedding"``; default: ``chat`` when the config's
            ``architectures`` name a ``*ForCausalLM``, else ``embedding``),
            ``dtype`` (``"float32"`` | ``"float16"`` | ``"bfloat16"``; default float32 on
            CPU, the checkpoint's dtype on CUDA),
            ``max_batch`` (default 16), ``max_prefill_tokens`` (default 4096),
            ``context_length`` (lower the model's limit),
            ``attn_implementation`` (default ``"sdpa"``), ``embed_batch_size`` (32: rows per
            forward pass, which embedding requests waiting together share),
            ``embed_group`` (default true; false: a pass of its own for each request),
            ``n_threads`` (CPU threads for torch; default on CPU: every core but one,
            see :func:`zhisuan.engines.base.cpu_threads`), ``queue`` (``"fair"``: the
            waiting requests of different tenants take turns, the default; ``"fifo"``:
            arrival order; see :mod:`zhisuan.engines._turns`).

    Returns:
        The loaded engine, ready to serve.

    Raises:
        InvalidParameter: an option has a value this engine does not know.
        OSError: the directory is missing files transformers needs.
    """
    fair = fair_option(options)
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # tqdm bars: noise
    torch_device = torch.device(device)
    if torch_device.type == "cpu" or options.get("n_threads"):
        torch.set_num_threads(cpu_threads(options.get("n_threads")))
    common: dict[str, Any] = {"local_files_only": True, "trust_remote_code": False}
    config = AutoConfig.from_pretrained(model_path, **common)
    task: Task = options.get("task") or _detect_task(config)
    if task not in ("chat", "embedding"):
        raise InvalidParameter(f"unknown task {task!r}", param="task")
    dtype = _pick_dtype(options.get("dtype"), torch_device)
    tokenizer = AutoTokenizer.from_pretrained(model_path, **common)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    model_limit = int(getattr(text_config, "max_position_embeddings", 0) or 2048)
    started = time.perf_counter()
    kwargs: dict[str, Any] = {
        **common,
        "dtype": dtype,
        "attn_implementation": options.get("attn_implementation", "sdpa"),
    }
    pooling: PoolingSpec | None = None
    model: Any
    if task == "chat":
        model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
        tokenizer.padding_side = "left"
        limit = model_limit
    else:
        model = AutoModel.from_pretrained(model_path, **kwargs)
        tokenizer.padding_side = "right"
        pooling = read_pooling(model_path)
        limit = min(model_limit, pooling.max_length or model_limit)
    if options.get("context_length"):
        limit = min(limit, int(options["context_length"]))
    model = model.to(torch_device).eval()
    logger.info(
        "loaded %s (%s, %s) on %s as %s in %.1fs",
        model_name,
        type(model).__name__,
        model.dtype,
        torch_device,
        task,
        time.perf_counter() - started,
    )
    info = EngineInfo(
        model=model_name,
        engine="transformers",
        task=task,
        context_length=limit,
        device=str(torch_device),
        logprobs=task == "chat",
        prompt_logprobs=task == "chat",  # a pass of their own for the prompts (``_prompt``)
    )
    return TransformersEngine(
        info=info,
        tokenizer=tokenizer,
        model=model,
        max_batch=int(options.get("max_batch", 16)),
        max_prefill_tokens=int(options.get("max_prefill_tokens", 4096)),
        pooling=pooling,
        embed_batch_size=int(options.get("embed_batch_size", 32)),
        fair=fair,
        group_embeddings=bool(options.get("embed_group", True)),
    )


def _detect_task(config: Any) -> Task:
    architectures = getattr(config, "architectures", None) or []
    return "chat" if any(a.endswith("ForCausalLM") for a in architectures) else "embedding"


def _pick_dtype(name: str | None, device: Any) -> Any:
    if name:
        if name not in _DTYPES:
            raise InvalidParameter(
                f"unknown dtype {name!r}; use one of {', '.join(_DTYPES)}", param="dtype"
            )
        return _DTYPES[name]
    return "auto" if device.type == "cuda" else torch.float32
