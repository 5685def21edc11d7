"""Every option an engine's loader reads is one ``zhisuan deploy --option`` and the admin API
accept for that engine (so the list that refuses misspelt names refuses no real one)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import zhisuan.engines
from zhisuan.engines.options import ENGINE_OPTIONS, check_options, known_options
from zhisuan.errors import InvalidParameter

ROOT = Path(zhisuan.engines.__file__).parent
SOURCES = {
    "transformers": [*(ROOT / "transformers").glob("*.py"), ROOT / "_turns.py"],
    "llamacpp": [*(ROOT / "llamacpp").glob("*.py"), ROOT / "_turns.py"],
    "upstream": [ROOT / "upstream.py"],
}
READ = re.compile(r"""options(?:\.get\(|\[)\s*["']([a-z_]+)["']""")


@pytest.mark.parametrize("engine", sorted(ENGINE_OPTIONS))
def test_each_option_the_engine_reads_is_known(engine: str) -> None:
    read = {name for path in SOURCES[engine] for name in READ.findall(path.read_text())}
    assert len(read) >= 3  # the pattern finds the loader's reads
    assert read <= known_options(engine), read - known_options(engine)


def test_a_misspelt_option_names_the_closest() -> None:
    check_options("transformers", ["max_prefill_tokens", "queue", "price_input_per_mtok"])
    with pytest.raises(InvalidParameter, match="did you mean max_prefill_tokens") as info:
        check_options("transformers", ["max_prefil_tokens"])
    assert info.value.hint is not None and "embed_batch_size" in info.value.hint
    check_options("vllm", ["anything"])  # not an engine: the store refuses it
