"""``scripts/train_tiny_chat.py --quick`` writes a loadable HF checkpoint and a GGUF file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_training_run_writes_hf_and_gguf(tmp_path: Path) -> None:
    out = tmp_path / "tiny"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "train_tiny_chat.py"),
            "--quick",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for name in [
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ]:
        assert (out / name).is_file(), name
    assert (tmp_path / "tiny.gguf").stat().st_size > 1_000_000
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["num_key_value_heads"] < config["num_attention_heads"]

    from transformers import AutoTokenizer

    tokenizer: Any = AutoTokenizer.from_pretrained(out)
    ids: Any = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello!"}], add_generation_prompt=True, return_dict=True
    )["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids[-2:]) == "<|assistant|>\n"
