"""Parameter counts of pickle weights (only with ``--allow-pickle``).

``torch.load(weights_only=True)`` uses PyTorch's restricted unpickler, which rebuilds tensors
and plain containers only and refuses any other global, so no code from the file runs;
``mmap=True`` maps the storages instead of reading them. torch is imported here, lazily, and
nowhere else in the model store.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from zhisuan.errors import ImportRefused

log = logging.getLogger(__name__)


def count_pickle_params(path: Path, name: str) -> tuple[int, Counter[str]]:
    """Count the elements of every tensor in a PyTorch checkpoint without running its code.

    Args:
        path: a ``.bin``/``.pt``/``.pth``/``.ckpt`` file.
        name: how to name the file in messages.

    Returns:
        ``(parameter count, element counts per dtype name)``.

    Raises:
        ImportRefused: torch is not installed, or the file cannot be read safely (truncated,
            not a checkpoint, or it needs globals the restricted unpickler refuses).
    """
    try:
        import torch
    except ImportError as exc:
        raise ImportRefused(
            f"cannot read the pickle weights in {name}: torch is not installed",
            hint="install torch, or convert the weights to safetensors",
        ) from exc
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            # Legacy (pre-zip) checkpoints cannot be mapped; read them, still restricted.
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a foreign library's errors, converted at the boundary
        raise ImportRefused(
            f"cannot read the pickle weights in {name} safely: {_first_line(exc)}",
            hint="the file is truncated or needs code to load; convert it to safetensors "
            "where it was made",
        ) from exc
    by_dtype: Counter[str] = Counter()
    _walk(obj, by_dtype, torch)
    total = sum(by_dtype.values())
    log.debug("%s: %d parameters", name, total)
    return total, by_dtype


def _walk(obj: Any, acc: Counter[str], torch: Any) -> None:
    if isinstance(obj, torch.Tensor):
        acc[str(obj.dtype).removeprefix("torch.")] += int(obj.numel())
    elif isinstance(obj, dict):
        # Lightning-style checkpoints keep the weights under "state_dict" next to optimizer
        # state; count those only.
        if isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]
        for value in obj.values():
            _walk(value, acc, torch)
    elif isinstance(obj, list | tuple):
        for value in obj:
            _walk(value, acc, torch)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
