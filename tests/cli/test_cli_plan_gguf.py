"""``zhisuan plan … --model M`` where M is a GGUF file, or a GGUF model in the model store: its
shape comes from the GGUF metadata, so the plan is that of the HF directory it was exported
from; a GGUF whose shape cannot be read is one line and a hint, never a decode error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.modelstore.tiny_artifacts import write_gguf
from typer.testing import CliRunner, Result

from zhisuan import demo
from zhisuan.cli.main import build

app = build([])
CHAT = "zhisuan-tiny-chat"  # the demo model, as an HF directory
GGUF = "g"  # its GGUF export
SERVE = ["--device", "rtx-4090", "--prompt-tokens", "128", "--output-tokens", "32", "--json"]
TRAIN = ["--tokens", "1e9", "--device", "rtx-4090", "--count", "1", "--json"]


def _run(*args: str) -> Result:
    result = CliRunner().invoke(app, list(args))
    assert "Traceback" not in result.output
    return result


def _plan(*args: str) -> dict[str, Any]:
    result = _run(*args)
    assert result.exit_code == 0, result.output
    plan: dict[str, Any] = json.loads(result.stdout)
    return plan


def _refused(*args: str) -> list[str]:
    result = _run(*args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and len(lines) == 2 and lines[1].startswith("hint: ")
    return lines


@pytest.fixture
def models(home_env: str) -> str:
    assert _run("models", "import", str(demo.tiny_chat_dir()), "--link").exit_code == 0
    imported = _run("models", "import", str(demo.tiny_chat_gguf()), "--name", GGUF, "--link")
    assert imported.exit_code == 0
    return home_env


def _same_but_the_name(gguf: dict[str, Any], hf: dict[str, Any]) -> None:
    assert gguf.pop("model") == GGUF and hf.pop("model") == CHAT
    assert gguf == hf


@pytest.mark.parametrize(("command", "flags"), [("serve", SERVE), ("train", TRAIN)])
def test_a_gguf_store_model_plans_as_its_hf_directory(
    models: str, command: str, flags: list[str]
) -> None:
    gguf = _plan("plan", command, "--model", GGUF, *flags)
    hf = _plan("plan", command, "--model", CHAT, *flags)
    _same_but_the_name(gguf, hf)


def test_compare_and_catalog_show_read_a_gguf_store_model(models: str) -> None:
    devices = ["--device", "rtx-4090,a100-80gb", "--json"]
    gguf = _plan("plan", "compare", "--model", GGUF, *devices)
    hf = _plan("plan", "compare", "--model", CHAT, *devices)
    for one, other in zip(gguf, hf, strict=True):
        _same_but_the_name(one, other)
    shown, hf_shown = _plan("catalog", "show", GGUF), _plan("catalog", "show", CHAT)
    assert shown["source"] == f"GGUF metadata ({demo.tiny_chat_gguf().resolve()})"
    where = {"id", "name", "source", "confidence", "origin"}
    assert {k: v for k, v in shown.items() if k not in where} == {
        k: v for k, v in hf_shown.items() if k not in where
    }


def test_a_gguf_file_given_by_path(home_env: str) -> None:
    plan = _plan("plan", "serve", "--model", str(demo.tiny_chat_gguf()), *SERVE)
    assert plan["model"] == demo.tiny_chat_gguf().stem


def test_a_gguf_without_its_vocabulary_size_is_refused(home_env: str, tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "tiny.gguf")  # llama shapes, HF tensor names, no tokenizer
    assert _run("models", "import", str(path), "--name", "tiny", "--link").exit_code == 0
    lines = _refused("plan", "serve", "--model", "tiny")
    assert lines == [
        "error: the planner cannot read the shape of model 'tiny': its GGUF metadata has no "
        "llama.vocab_size, tokenizer.ggml.tokens or a token_embd.weight tensor",
        "hint: plan with the model's HF config.json (--model PATH) or a catalog id "
        "(`zhisuan catalog models`)",
    ]


def test_a_gguf_of_another_architecture_is_refused(home_env: str, tmp_path: Path) -> None:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(tmp_path / "enc.gguf"), "bert")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((10, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    lines = _refused("plan", "train", "--model", str(tmp_path / "enc.gguf"), *TRAIN)
    assert lines[0] == (
        "error: the planner cannot read the shape of model 'enc': its GGUF architecture is "
        "'bert', and it reads llama, qwen2, qwen3, phi3, gemma, gemma2, gpt2, gptneox, bloom, "
        "falcon, starcoder"
    )


def test_a_gguf_store_model_whose_file_is_gone_or_damaged(models: str, tmp_path: Path) -> None:
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(demo.tiny_chat_gguf().read_bytes())
    assert _run("models", "import", str(copy), "--name", "gone", "--link").exit_code == 0
    copy.write_bytes(copy.read_bytes()[:4096])  # cut inside its tensor data
    assert "is truncated" in _refused("plan", "serve", "--model", "gone")[0]
    copy.unlink()
    lines = _refused("plan", "serve", "--model", "gone")
    assert lines[0] == f"error: model 'gone': its GGUF file {copy} does not exist"


def test_the_docs_name_the_architectures_read() -> None:
    from zhisuan.catalog import GGUF_ARCHS

    docs = Path(__file__).parents[2] / "docs" / "planner.md"
    assert f"({', '.join(GGUF_ARCHS)})" in " ".join(docs.read_text().split())
