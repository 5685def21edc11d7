"""What inspecting a model artifact yields, and the file-kind rules shared by the inspectors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# Weight formats that are Python pickles: loading one can run arbitrary code.
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"})
SAFETENSORS_SUFFIX = ".safetensors"
GGUF_SUFFIX = ".gguf"


@dataclass
class ModelInfo:
    """Facts read from a model artifact, without loading its weights or running its code.

    Attributes:
        format: ``"hf"`` (a directory) or ``"gguf"`` (a file).
        task: ``"chat"`` or ``"embedding"``.
        root: the directory (hf) or the file (gguf) inspected, resolved.
        files: every file to import, relative to ``root`` (hf) or its parent (gguf).
        weight_files: the subset of ``files`` holding weights (hashed at import).
        skipped: files left out of the import (pickle duplicates of safetensors weights).
        param_count: sum of the element counts of all weight tensors, from their shapes.
        dtype: the dtype holding most parameters.
        bytes_on_disk: total size of ``files``.
    """

    format: str
    task: str
    root: Path
    files: list[str]
    weight_files: list[str]
    architecture: str | None = None
    param_count: int | None = None
    num_layers: int | None = None
    hidden_size: int | None = None
    num_heads: int | None = None
    num_kv_heads: int | None = None
    context_length: int | None = None
    dtype: str | None = None
    bytes_on_disk: int = 0
    skipped: list[str] = field(default_factory=list)

    @property
    def base_dir(self) -> Path:
        """The directory that ``files`` are relative to."""
        return self.root if self.format == "hf" else self.root.parent
