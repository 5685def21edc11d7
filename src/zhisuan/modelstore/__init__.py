"""Model artifacts: inspect and import HF-format directories and GGUF files.

Nothing here runs a model's code or unpickles its weights: config.json is read as JSON,
parameter counts come from the safetensors headers' shapes (or the GGUF tensor table), and
pickle weights are refused unless ``allow_pickle`` (then read with
``torch.load(weights_only=True)``). An import is all or nothing::

    from zhisuan.modelstore import import_model
    model = import_model(store, settings, Path("~/hf/Qwen2.5-0.5B-Instruct"), licence="commercial")
"""

from __future__ import annotations

from zhisuan.modelstore._gguf import inspect_gguf
from zhisuan.modelstore._hf import config_facts, detect_task, inspect_hf_dir
from zhisuan.modelstore._import import (
    ProgressCallback,
    default_name,
    import_model,
    inspect_path,
    remove_model,
    validate_name,
)
from zhisuan.modelstore._safetensors import SafetensorsHeader, read_header
from zhisuan.modelstore._types import ModelInfo

__all__ = [
    "ModelInfo",
    "ProgressCallback",
    "SafetensorsHeader",
    "config_facts",
    "default_name",
    "detect_task",
    "import_model",
    "inspect_gguf",
    "inspect_hf_dir",
    "inspect_path",
    "read_header",
    "remove_model",
    "validate_name",
]
