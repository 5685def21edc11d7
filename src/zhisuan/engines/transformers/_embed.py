"""Embedding models: the pooling (and normalisation) the checkpoint declares.

A sentence-transformers directory lists its pipeline in ``modules.json``; the
``sentence_transformers.models.Pooling`` module's ``config.json`` says how token states
become one vector (``pooling_mode_cls_token``, ``pooling_mode_mean_tokens``,
``pooling_mode_max_tokens``, ``pooling_mode_mean_sqrt_len_tokens``,
``pooling_mode_lasttoken``; several true modes are concatenated in that order, as
sentence-transformers does), and a ``sentence_transformers.models.Normalize`` module
means L2 normalisation. Without ``modules.json`` we mean-pool and do not normalise.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

_MODES = ("cls", "max", "mean", "mean_sqrt_len", "lasttoken")
_KEYS = {
    "cls": "pooling_mode_cls_token",
    "max": "pooling_mode_max_tokens",
    "mean": "pooling_mode_mean_tokens",
    "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens",
    "lasttoken": "pooling_mode_lasttoken",
}


@dataclass(frozen=True, slots=True)
class PoolingSpec:
    """How to turn token states into one vector.

    Attributes:
        modes: pooling modes to concatenate, in sentence-transformers order.
        normalize: L2-normalise the result.
        max_length: longest input in tokens (``sentence_bert_config.json``'s
            ``max_seq_length`` when given), or ``None`` to use the model's limit.
    """

    modes: tuple[str, ...]
    normalize: bool
    max_length: int | None = None


def read_pooling(model_dir: Path) -> PoolingSpec:
    """Read the pooling a model directory declares.

    Args:
        model_dir: an HF model directory, possibly laid out by sentence-transformers.

    Returns:
        The pooling spec; mean pooling without normalisation when nothing is declared.
    """
    max_length: int | None = None
    st_config = model_dir / "sentence_bert_config.json"
    if st_config.is_file():
        value = json.loads(st_config.read_text()).get("max_seq_length")
        max_length = int(value) if value else None
    modules_file = model_dir / "modules.json"
    if not modules_file.is_file():
        return PoolingSpec(("mean",), normalize=False, max_length=max_length)
    modules: list[dict[str, Any]] = json.loads(modules_file.read_text())
    modes: tuple[str, ...] = ("mean",)
    normalize = False
    for module in modules:
        kind = str(module.get("type", ""))
        if kind.endswith(".Pooling"):
            config_file = model_dir / str(module.get("path", "")) / "config.json"
            if config_file.is_file():
                config = json.loads(config_file.read_text())
                declared = tuple(m for m in _MODES if config.get(_KEYS[m]))
                if config.get("pooling_mode") in _MODES:  # newer single-key form
                    declared = (config["pooling_mode"],)
                modes = declared or modes
        elif kind.endswith(".Normalize"):
            normalize = True
    return PoolingSpec(modes, normalize=normalize, max_length=max_length)


def pool(hidden: Any, mask: Any, spec: PoolingSpec) -> Any:
    """Pool token states into one vector per input.

    Args:
        hidden: ``(B, T, H)`` last hidden states (right padded).
        mask: ``(B, T)`` attention mask, 1 on real tokens.
        spec: the pooling to apply.

    Returns:
        ``(B, H * len(spec.modes))`` float32 vectors.
    """
    hidden = hidden.float()
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    lengths = weights.sum(dim=1).clamp(min=1e-9)  # (B, 1)
    parts = []
    for mode in spec.modes:
        if mode == "cls":
            parts.append(hidden[:, 0])
        elif mode == "max":
            parts.append(hidden.masked_fill(weights == 0, float("-inf")).max(dim=1).values)
        elif mode == "mean":
            parts.append((hidden * weights).sum(dim=1) / lengths)
        elif mode == "mean_sqrt_len":
            parts.append((hidden * weights).sum(dim=1) / lengths.sqrt())
        else:  # lasttoken: right padding, so the last real token is at length - 1
            last = mask.sum(dim=1).long() - 1  # (B,)
            parts.append(hidden[torch.arange(hidden.shape[0], device=hidden.device), last])
    vectors = torch.cat(parts, dim=-1)
    if spec.normalize:
        vectors = torch.nn.functional.normalize(vectors, p=2, dim=-1)
    return vectors
