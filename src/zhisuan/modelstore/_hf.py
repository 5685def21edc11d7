"""Inspect a Hugging Face-format model directory without running or unpickling anything.

config.json is read as plain JSON (no ``trust_remote_code``, no import of the model's code);
parameter counts come from the safetensors headers' tensor shapes; sharded checkpoints are
checked against their ``*.index.json``. Pickle weights are refused unless ``allow_pickle``.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

from zhisuan.errors import ImportRefused
from zhisuan.modelstore._safetensors import SafetensorsHeader, read_header
from zhisuan.modelstore._types import PICKLE_SUFFIXES, SAFETENSORS_SUFFIX, ModelInfo

log = logging.getLogger(__name__)

# Config keys per fact, in order of preference, across llama/mistral/qwen2/mixtral/gemma
# (HF names), gpt2/gpt-j/bloom (n_*), t5/mpt (d_model, n_heads), falcon and chatglm.
CONFIG_KEYS: dict[str, tuple[str, ...]] = {
    "num_layers": ("num_hidden_layers", "n_layer", "n_layers", "num_layers"),
    "hidden_size": ("hidden_size", "n_embd", "d_model", "dim"),
    "num_heads": ("num_attention_heads", "n_head", "n_heads", "num_heads"),
    "num_kv_heads": (
        "num_key_value_heads", "num_kv_heads", "n_head_kv", "n_kv_heads", "multi_query_group_num",
    ),
    "context_length": (
        "max_position_embeddings", "n_positions", "seq_length", "max_seq_len",
        "max_sequence_length", "n_ctx",
    ),
}  # fmt: skip
ENCODER_MODEL_TYPES = frozenset(
    {
        "bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "electra", "albert",
        "deberta", "deberta-v2", "camembert", "nomic_bert", "modernbert", "xlm", "ernie",
    }
)  # fmt: skip
DECODER_HEADS = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")
SENTENCE_TRANSFORMERS_MARKERS = ("modules.json", "config_sentence_transformers.json", "1_Pooling")
_HINT_LAYOUT = (
    "an HF-format directory holds config.json, *.safetensors and the tokenizer files; "
    "for a GGUF model pass the .gguf file itself"
)


def inspect_hf_dir(root: Path, *, allow_pickle: bool = False) -> ModelInfo:
    """Read the facts of an HF-format model directory.

    Args:
        root: the directory.
        allow_pickle: accept ``.bin``/``.pt``/``.pth``/``.ckpt`` weights (read with
            ``torch.load(weights_only=True)``) when there are no safetensors.

    Returns:
        The model's facts and the files to import.

    Raises:
        ImportRefused: config.json missing or malformed, no weights, pickle-only weights
            without ``allow_pickle``, a truncated or malformed weight file, a missing shard.
    """
    root = root.resolve()
    config_path = root / "config.json"
    if not config_path.is_file():
        raise ImportRefused(
            f"not an HF model directory: config.json missing in {root}", hint=_HINT_LAYOUT
        )
    config = _read_config(config_path)

    files = _list_files(root)
    safetensors = [f for f in files if f.endswith(SAFETENSORS_SUFFIX)]
    pickles = [f for f in files if Path(f).suffix in PICKLE_SUFFIXES]
    skipped: list[str] = []
    if not safetensors and not pickles:
        raise ImportRefused(
            f"no weights in {root}: no *.safetensors file", hint=_HINT_LAYOUT, param="path"
        )
    if pickles and not safetensors and not allow_pickle:
        raise ImportRefused(
            f"{root} holds only pickle weights ({', '.join(pickles[:3])}"
            f"{', …' if len(pickles) > 3 else ''}); loading pickle can run arbitrary code",
            hint="convert them to safetensors, or pass --allow-pickle if you trust their "
            "source (they are then read with torch.load(weights_only=True))",
        )
    if pickles and safetensors and not allow_pickle:
        # The safetensors copy is what the engines load; the pickles stay behind.
        skipped = pickles
        log.info("%s: leaving out pickle files %s (safetensors present)", root, pickles)
        files = [f for f in files if f not in set(pickles)]

    by_dtype: Counter[str] = Counter()
    if safetensors:
        headers = {f: read_header(root / f, f) for f in safetensors}
        _check_index(root, headers)
        for h in headers.values():
            by_dtype.update(h.params_by_dtype)
        weights = safetensors + (pickles if allow_pickle else [])
    else:
        from zhisuan.modelstore._pickle import count_pickle_params

        _check_pickle_index(root, pickles)
        for f in pickles:
            by_dtype.update(count_pickle_params(root / f, f)[1])
        weights = pickles

    facts = config_facts(config)
    return ModelInfo(
        format="hf",
        task=detect_task(config, root),
        root=root,
        files=files,
        weight_files=weights,
        param_count=sum(by_dtype.values()),
        dtype=by_dtype.most_common(1)[0][0] if by_dtype else _config_dtype(config),
        bytes_on_disk=sum((root / f).stat().st_size for f in files),
        skipped=skipped,
        **facts,
    )


def config_facts(config: dict[str, Any]) -> dict[str, Any]:
    """Architecture and shape facts from an HF config (top level, else ``text_config``).

    Args:
        config: the parsed config.json.

    Returns:
        ``architecture``, ``num_layers``, ``hidden_size``, ``num_heads``, ``num_kv_heads``
        (defaults to ``num_heads``; 1 for multi-query configs) and ``context_length``; None
        where the config does not say.
    """
    sources = [config]
    if isinstance(config.get("text_config"), dict):
        sources.append(config["text_config"])
    out: dict[str, Any] = {}
    for fact, keys in CONFIG_KEYS.items():
        out[fact] = next(
            (src[k] for src in sources for k in keys if _positive_int(src.get(k))), None
        )
    if out["num_kv_heads"] is None and out["num_heads"] is not None:
        multi_query = config.get("multi_query") is True and not config.get(
            "new_decoder_architecture"
        )
        out["num_kv_heads"] = 1 if multi_query else out["num_heads"]
    model_type = config.get("model_type")
    archs = config.get("architectures")
    if isinstance(model_type, str) and model_type:
        out["architecture"] = model_type
    elif isinstance(archs, list) and archs and isinstance(archs[0], str):
        out["architecture"] = archs[0]
    else:
        out["architecture"] = None
    return out


def detect_task(config: dict[str, Any], root: Path | None = None) -> str:
    """``"embedding"`` for encoders and sentence-transformers layouts, else ``"chat"``.

    Args:
        config: the parsed config.json.
        root: the model directory (to look for sentence-transformers files), if any.

    Returns:
        ``"chat"`` or ``"embedding"``.
    """
    if root is not None and any((root / m).exists() for m in SENTENCE_TRANSFORMERS_MARKERS):
        return "embedding"
    archs = [a for a in config.get("architectures") or [] if isinstance(a, str)]
    if any(a.endswith(DECODER_HEADS) for a in archs):
        return "chat"
    if config.get("model_type") in ENCODER_MODEL_TYPES:
        return "embedding"
    return "chat"


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ImportRefused(
            f"{path} is not valid JSON: {exc}", hint="fix or re-download config.json"
        ) from exc
    if not isinstance(config, dict):
        raise ImportRefused(f"{path} is not a JSON object", hint="fix or re-download config.json")
    return config


def _list_files(root: Path) -> list[str]:
    """Every regular file under ``root`` (following links), relative, hidden entries skipped.

    A directory reached again through a link (a loop such as ``again -> .``, or two links
    to one place) is listed once, where it is first reached.
    """
    out: list[str] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fname in sorted(filenames):
            full = Path(dirpath) / fname
            if fname.startswith(".") or not full.is_file():
                continue
            out.append(full.relative_to(root).as_posix())
    return out


def _check_index(root: Path, headers: dict[str, SafetensorsHeader]) -> None:
    """Every ``*.safetensors.index.json`` must name shards that exist and hold its tensors."""
    for index_path in sorted(root.glob("*.safetensors.index.json")):
        weight_map = _read_index(index_path)
        for tensor, shard in sorted(weight_map.items()):
            header = headers.get(shard)
            if header is None:
                raise ImportRefused(
                    f"shard {shard} named in {index_path.name} is missing",
                    hint="download every shard of the checkpoint",
                )
            if tensor not in header.tensors:
                raise ImportRefused(
                    f"{index_path.name} puts tensor {tensor!r} in {shard}, which does not hold it",
                    hint="the index and the shards come from different checkpoints; "
                    "download them again",
                )


def _check_pickle_index(root: Path, pickles: list[str]) -> None:
    for index_path in sorted(root.glob("*.bin.index.json")):
        for shard in sorted(set(_read_index(index_path).values())):
            if shard not in pickles:
                raise ImportRefused(
                    f"shard {shard} named in {index_path.name} is missing",
                    hint="download every shard of the checkpoint",
                )


def _read_index(path: Path) -> dict[str, str]:
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
        weight_map = index["weight_map"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ImportRefused(
            f"{path.name} is not a valid shard index: {exc}", hint="download it again"
        ) from exc
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise ImportRefused(f"{path.name} has a malformed weight_map", hint="download it again")
    return weight_map


def _config_dtype(config: dict[str, Any]) -> str | None:
    value = config.get("torch_dtype") or config.get("dtype")
    return value if isinstance(value, str) else None


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
