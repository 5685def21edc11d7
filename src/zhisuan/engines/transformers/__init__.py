"""The ``transformers`` engine: Hugging Face models on CPU or CUDA.

Chat models decode with continuous batching (``_batcher``); embedding models pool the
way their sentence-transformers files say (``_embed``). Importing this package imports
torch and transformers, so only a worker process does it; ``zhisuan.engines`` never does.

Use :func:`load` to build an engine::

    engine = load(path, model_name="tiny", device="cpu", options={})
"""

from __future__ import annotations

from zhisuan.engines.transformers._batcher import EngineStats
from zhisuan.engines.transformers._engine import TransformersEngine
from zhisuan.engines.transformers._load import load

__all__ = ["EngineStats", "TransformersEngine", "load"]
