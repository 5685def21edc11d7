"""Inspect a GGUF file: its facts for the model store, from the header that
:func:`zhisuan.catalog.read_whole_gguf` reads and checks (the catalog reads GGUF headers
too, for a GGUF file's shape; the ``gguf`` package is imported there, lazily).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from zhisuan.catalog import GGUF_MAGIC as GGUF_MAGIC
from zhisuan.catalog import read_whole_gguf
from zhisuan.modelstore._types import ModelInfo

log = logging.getLogger(__name__)

# Architectures whose GGUF conversions are embedding models (llama.cpp's BERT family).
EMBEDDING_ARCHS = frozenset({"bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "modern-bert"})


def inspect_gguf(path: Path) -> ModelInfo:
    """Read the facts of a GGUF file.

    Args:
        path: the ``.gguf`` file.

    Returns:
        The model's facts; ``param_count`` is the sum of the tensors' element counts and
        ``dtype`` the file type (``Q4_K_M``, ``F16`` …).

    Raises:
        ImportRefused: not a GGUF file, malformed, or truncated (the message gives the
            expected and actual size).
    """
    path = path.resolve()
    size = path.stat().st_size
    contents = read_whole_gguf(path)
    fields, tensors = contents.fields, contents.tensors
    arch = fields.get("general.architecture")
    arch = arch if isinstance(arch, str) else None
    by_type: Counter[str] = Counter()
    for t in tensors:
        by_type[t.type_name] += t.n_elements

    def arch_int(key: str) -> int | None:
        value = fields.get(f"{arch}.{key}") if arch else None
        return value if isinstance(value, int) and value > 0 else None

    heads = arch_int("attention.head_count")
    kv_heads = arch_int("attention.head_count_kv") or heads
    task = "embedding" if arch in EMBEDDING_ARCHS or arch_int("pooling_type") else "chat"
    return ModelInfo(
        format="gguf",
        task=task,
        root=path,
        files=[path.name],
        weight_files=[path.name],
        architecture=arch,
        param_count=sum(by_type.values()),
        num_layers=arch_int("block_count"),
        hidden_size=arch_int("embedding_length"),
        num_heads=heads,
        num_kv_heads=kv_heads,
        context_length=arch_int("context_length"),
        dtype=_file_type(fields.get("general.file_type"), by_type),
        bytes_on_disk=size,
    )


def _file_type(value: Any, by_type: Counter[str]) -> str | None:
    from gguf import LlamaFileType

    if isinstance(value, int):
        try:
            name = LlamaFileType(value).name
        except ValueError:
            name = None
        if name and name != "GUESSED":
            return name.removeprefix("MOSTLY_").removeprefix("ALL_")
    # No (or an unknown) file type: the tensor type holding most parameters.
    return by_type.most_common(1)[0][0] if by_type else None
