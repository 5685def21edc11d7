"""The shape of a GGUF file, read from its metadata.

llama.cpp's converters write the shape of the network as ``{arch}.block_count``,
``{arch}.embedding_length``, ``{arch}.attention.head_count`` … These are mapped onto the
Hugging Face config keys that :func:`~zhisuan.catalog.model_from_hf_dict` reads, so a GGUF
file and the HF directory it was converted from give the same architecture. Only the
architectures in :data:`GGUF_ARCHS`, whose mapping is known to hold, are read; another one
(an embedding model's, ``bert`` …) or metadata without the shape is refused with the
reason. The ``gguf`` package (with numpy) is imported only when a GGUF file is read.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from zhisuan.catalog._gguf_header import GgufContents, read_gguf, read_whole_gguf
from zhisuan.catalog._hfconfig import model_from_hf_dict
from zhisuan.catalog._types import ModelArch
from zhisuan.errors import InvalidParameter

GGUF_ARCHS = {
    "llama": "llama",  # Llama 1-3, Mistral, Mixtral (with expert_count) and their kin
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "phi3": "phi3",
    "gemma": "gemma",
    "gemma2": "gemma2",
    "gpt2": "gpt2",
    "gptneox": "gpt_neox",
    "bloom": "bloom",
    "falcon": "falcon",
    "starcoder": "gpt_bigcode",
}
"""GGUF ``general.architecture`` -> the HF ``model_type`` whose layout it has."""

# GGUF key (after "{arch}.") -> HF config key.
_KEYS = {
    "embedding_length": "hidden_size",
    "block_count": "num_hidden_layers",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.key_length": "head_dim",
    "feed_forward_length": "intermediate_size",
    "context_length": "max_position_embeddings",
    "vocab_size": "vocab_size",
    "expert_count": "num_local_experts",
    "expert_used_count": "num_experts_per_tok",
}
_SHAPE = ("block_count", "embedding_length", "attention.head_count")
_HINT = (
    "plan with the model's HF config.json (--model PATH) or a catalog id (`zhisuan catalog models`)"
)


def model_from_gguf(path: Path, *, name: str) -> ModelArch:
    """The architecture of the GGUF file ``path``, from its metadata.

    Args:
        path: the ``.gguf`` file.
        name: id to give the model (the ``--model`` given).

    Returns:
        The architecture, with ``origin`` the file and ``source`` its metadata.

    Raises:
        InvalidParameter: the file is missing, or its metadata is of an architecture not in
            :data:`GGUF_ARCHS` (as an embedding model's is) or lacks a shape key.
        ImportRefused: the file is not a valid GGUF file (damaged or truncated).
    """
    if not path.is_file():
        raise InvalidParameter(
            f"model {name!r}: its GGUF file {path} does not exist",
            param="model",
            hint="import the file again (`zhisuan models import`)",
        )
    contents = _read(path)
    fields = contents.fields
    shapes = {t.name: t.shape for t in contents.tensors}
    arch = fields.get("general.architecture")
    if arch not in GGUF_ARCHS:
        raise InvalidParameter(
            f"the planner cannot read the shape of model {name!r}: its GGUF architecture is "
            f"{arch!r}, and it reads {', '.join(GGUF_ARCHS)}",
            param="model",
            hint=_HINT,
        )
    given = {key: fields.get(f"{arch}.{key}") for key in _KEYS}
    cfg: dict[str, Any] = {_KEYS[k]: v for k, v in given.items() if _positive_int(v)}
    embed = shapes.get("token_embd.weight", ())  # (hidden, vocab), ggml's order
    vocab = cfg.get("vocab_size") or contents.n_tokens or (embed[1] if len(embed) == 2 else None)
    lacking = [f"{arch}.{key}" for key in _SHAPE if _KEYS[key] not in cfg]
    if not vocab:
        lacking.append(f"{arch}.vocab_size, tokenizer.ggml.tokens or a token_embd.weight tensor")
    if lacking:
        raise InvalidParameter(
            f"the planner cannot read the shape of model {name!r}: its GGUF metadata has no "
            f"{lacking[0]}",
            param="model",
            hint=_HINT,
        )
    cfg.update(
        model_type=GGUF_ARCHS[arch],
        vocab_size=vocab,
        tie_word_embeddings="output.weight" not in shapes,  # the output reuses token_embd
    )
    found = model_from_hf_dict(cfg, name=name, origin=str(path))
    return replace(
        found,
        source=f"GGUF metadata ({path})",
        confidence="high: computed from the model's own GGUF metadata",
    )


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _read(path: Path) -> GgufContents:
    """The header of ``path``.

    Raises:
        ImportRefused: the reader failed on a damaged file (what is wrong, from
            :func:`~zhisuan.catalog.read_whole_gguf`'s checks).
        InvalidParameter: the reader failed on a file those checks pass.
    """
    try:
        return read_gguf(path)
    except Exception as exc:  # the reader raises ValueError, IndexError …; convert here
        read_whole_gguf(path)  # raises ImportRefused saying what is wrong, if it finds it
        raise InvalidParameter(
            f"cannot read the GGUF metadata of {path.name}: {exc}", param="model", hint=_HINT
        ) from exc
