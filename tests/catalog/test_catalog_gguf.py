"""``Catalog.model`` reads a GGUF file's shape from its metadata, given its path or a store
name that resolves to it, for every caller (the planner's functions too, not only
``zhisuan plan``), without importing the model store or torch; an architecture it does not
map is refused with the reason, in one line."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from zhisuan import demo
from zhisuan.catalog import GGUF_ARCHS, ModelArch, load_catalog, model_from_hf_config
from zhisuan.errors import InvalidParameter

WHERE = {"id", "name", "source", "confidence", "origin"}  # what says where a shape came from


def _shape(model: ModelArch) -> dict[str, Any]:
    return {k: v for k, v in asdict(model).items() if k not in WHERE}


def _bert_gguf(path: Path) -> Path:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "bert")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((10, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_gguf_path_reads_as_the_hf_directory_it_was_exported_from() -> None:
    gguf = demo.tiny_chat_gguf()
    found = load_catalog().model(str(gguf))
    assert (found.id, found.origin) == (gguf.stem, str(gguf))
    assert found.source == f"GGUF metadata ({gguf})"
    assert _shape(found) == _shape(model_from_hf_config(demo.tiny_chat_dir()))


def test_a_store_name_that_resolves_to_a_gguf_file_reads_its_metadata(tmp_path: Path) -> None:
    gguf = demo.tiny_chat_gguf()
    found = load_catalog().model("my-gguf", resolver=lambda name: gguf)
    assert found.id == "my-gguf"
    assert _shape(found) == _shape(model_from_hf_config(demo.tiny_chat_dir()))
    gone = tmp_path / "gone.gguf"  # the store's file was deleted
    with pytest.raises(InvalidParameter, match=r"its GGUF file .* does not exist"):
        load_catalog().model("gone", resolver=lambda name: gone)


def test_the_planner_plans_a_gguf_path() -> None:
    from zhisuan.planner.serve import ServeRequest, plan_serve

    request = {"device": "rtx-4090", "prompt_tokens": 128, "output_tokens": 32}
    by_path = plan_serve(ServeRequest(model=str(demo.tiny_chat_gguf()), **request)).to_json()
    by_dir = plan_serve(ServeRequest(model=str(demo.tiny_chat_dir()), **request)).to_json()
    assert by_path.pop("model") == demo.tiny_chat_gguf().stem
    by_dir.pop("model")
    assert by_path == by_dir


def test_a_gguf_of_an_architecture_not_mapped_is_refused_in_one_line(tmp_path: Path) -> None:
    path = _bert_gguf(tmp_path / "enc.gguf")
    with pytest.raises(InvalidParameter) as info:
        load_catalog().model(str(path))
    assert str(info.value) == (
        "the planner cannot read the shape of model 'enc': its GGUF architecture is 'bert', "
        f"and it reads {', '.join(GGUF_ARCHS)}"
    )
    assert info.value.hint and "\n" not in info.value.hint


def test_reading_a_gguf_shape_imports_neither_the_model_store_nor_torch() -> None:
    code = (
        "import sys\n"
        "from zhisuan.catalog import load_catalog\n"
        f"load_catalog().model({str(demo.tiny_chat_gguf())!r})\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'\n"
        "      or m.startswith(('zhisuan.modelstore', 'zhisuan.store', 'sqlalchemy'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
