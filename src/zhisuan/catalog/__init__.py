"""Facts the planner reasons with: accelerators and model architectures, each with a source.

Public API::

    cat = load_catalog(home=settings.home, extra_paths=[Path("my.yaml")])
    cat.accelerator("h100")            # -> Accelerator (NotFound with suggestions otherwise)
    cat.model("llama3-70b")            # -> ModelArch; also a config.json path or a store name
    cat.model("my-model", resolver=store_lookup)

The built-in data lives in ``zhisuan/catalog/data/*.yaml``; every entry carries ``source`` and
``confidence``. Prices are indicative.
"""

from __future__ import annotations

from zhisuan.catalog._hfconfig import model_from_hf_config, model_from_hf_dict
from zhisuan.catalog._loader import (
    Catalog,
    ModelResolver,
    accelerator_from_dict,
    load_catalog,
    model_from_dict,
)
from zhisuan.catalog._types import MLA, PRECISIONS, Accelerator, ModelArch, MoE, Price

__all__ = [
    "MLA",
    "PRECISIONS",
    "Accelerator",
    "Catalog",
    "MoE",
    "ModelArch",
    "ModelResolver",
    "Price",
    "accelerator_from_dict",
    "load_catalog",
    "model_from_dict",
    "model_from_hf_config",
    "model_from_hf_dict",
]
