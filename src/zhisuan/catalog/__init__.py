"""Facts the planner reasons with: accelerators and model architectures, each with a source.

Public API::

    cat = load_catalog(home=settings.home, extra_paths=[Path("my.yaml")])
    cat.accelerator("h100")            # -> Accelerator (NotFound with suggestions otherwise)
    cat.model("llama3-70b")            # -> ModelArch; also a config.json or GGUF path
    cat.model("my-model", resolver=store_lookup)  # a store name -> its directory or GGUF file

The built-in data lives in ``zhisuan/catalog/data/*.yaml``; every entry carries ``source`` and
``confidence``. Prices are indicative. A GGUF file's shape is read from its metadata
(``_gguf.py``; its header reader, ``_gguf_header.py``, serves the model store too).
"""

from __future__ import annotations

from zhisuan.catalog._gguf import GGUF_ARCHS, model_from_gguf
from zhisuan.catalog._gguf_header import (
    GGUF_MAGIC,
    GgufContents,
    GgufTensor,
    is_gguf,
    read_gguf,
    read_whole_gguf,
)
from zhisuan.catalog._hfconfig import model_from_hf_config, model_from_hf_dict
from zhisuan.catalog._loader import (
    Catalog,
    ModelResolver,
    accelerator_from_dict,
    load_catalog,
    model_from_dict,
    model_from_path,
)
from zhisuan.catalog._types import MLA, PRECISIONS, Accelerator, ModelArch, MoE, Price

__all__ = [
    "GGUF_ARCHS",
    "GGUF_MAGIC",
    "MLA",
    "PRECISIONS",
    "Accelerator",
    "Catalog",
    "GgufContents",
    "GgufTensor",
    "MoE",
    "ModelArch",
    "ModelResolver",
    "Price",
    "accelerator_from_dict",
    "is_gguf",
    "load_catalog",
    "model_from_dict",
    "model_from_gguf",
    "model_from_hf_config",
    "model_from_hf_dict",
    "model_from_path",
    "read_gguf",
    "read_whole_gguf",
]
