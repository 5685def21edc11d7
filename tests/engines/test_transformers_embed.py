"""The transformers engine on embeddings: the bundled all-MiniLM-L6-v2 against a mean-pool
reference, batching under concurrency, the context limit and the pooling modes (CPU)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from zhisuan.demo import minilm_dir
from zhisuan.engines.transformers import TransformersEngine, load
from zhisuan.engines.transformers._embed import PoolingSpec, pool, read_pooling
from zhisuan.errors import ContextLengthExceeded, InvalidParameter
from zhisuan.protocol import SamplingParams


@pytest.fixture(scope="module")
def embedder() -> Iterator[TransformersEngine]:
    engine = load(minilm_dir(), model_name="minilm", device="cpu", options={})
    yield engine
    asyncio.run(engine.close())


def test_embedding_engine_refuses_generate(embedder: TransformersEngine) -> None:
    with pytest.raises(InvalidParameter):
        embedder.generate("hi", SamplingParams(max_tokens=1, temperature=0.0), "r")


def test_embeddings_match_mean_pool_reference(embedder: TransformersEngine) -> None:
    from transformers import AutoModel, AutoTokenizer

    assert embedder.info.task == "embedding"
    assert embedder.info.context_length == 256  # sentence_bert_config max_seq_length
    texts = ["A man is eating food.", "Someone is having a meal.", "The stock market fell."]
    result = asyncio.run(embedder.embed(texts))

    tok = AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True)
    model = AutoModel.from_pretrained(minilm_dir(), local_files_only=True).eval()
    with torch.inference_mode():
        for text, vector in zip(texts, result.vectors, strict=True):
            enc = tok(text, return_tensors="pt")
            hidden = model(**enc).last_hidden_state[0]  # (T, H)
            ref = torch.nn.functional.normalize(hidden.mean(dim=0), dim=0)
            assert torch.allclose(torch.tensor(vector), ref, atol=1e-5)
    expected_tokens = sum(len(tok(t)["input_ids"]) for t in texts)
    assert result.prompt_tokens == expected_tokens

    v = torch.tensor(result.vectors)
    assert torch.allclose(v.norm(dim=1), torch.ones(3), atol=1e-5)
    sims = v @ v.T
    assert sims[0, 1] > sims[0, 2] and sims[0, 1] > sims[1, 2]


def test_embeddings_batched_equal_alone_under_concurrency(embedder: TransformersEngine) -> None:
    texts = ["short", "a somewhat longer sentence about foxes", "中文句子", "x " * 60, "end"]

    async def run() -> tuple[list[list[float]], list[list[list[float]]]]:
        together = embedder.embed(texts)
        alone = [embedder.embed([t]) for t in texts]
        counts = [embedder.count_tokens(t) for t in texts]  # loop thread, meanwhile
        results = await asyncio.gather(together, *alone)
        assert all(n > 0 for n in counts)
        return results[0].vectors, [r.vectors for r in results[1:]]

    batched, singles = asyncio.run(run())
    for vector, single in zip(batched, singles, strict=True):
        assert torch.allclose(torch.tensor(vector), torch.tensor(single[0]), atol=1e-5)


def test_embedding_too_long_raises(embedder: TransformersEngine) -> None:
    with pytest.raises(ContextLengthExceeded) as info:
        asyncio.run(embedder.embed(["short", "word " * 400]))
    assert info.value.param == "input"
    assert info.value.limit == 256
    assert asyncio.run(embedder.embed([])).vectors == []


def test_read_pooling_modes(tmp_path: Path) -> None:
    assert read_pooling(tmp_path) == PoolingSpec(("mean",), normalize=False)
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "modules.json").write_text(
        json.dumps(
            [
                {"type": "sentence_transformers.models.Transformer", "path": ""},
                {"type": "sentence_transformers.models.Pooling", "path": "1_Pooling"},
            ]
        )
    )
    (tmp_path / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})
    )
    assert read_pooling(tmp_path) == PoolingSpec(("cls",), normalize=False)
    spec = read_pooling(minilm_dir())
    assert spec == PoolingSpec(("mean",), normalize=True, max_length=256)


def test_pool_modes() -> None:
    hidden = torch.tensor([[[1.0, 2.0], [3.0, -4.0], [100.0, 100.0]]])  # (1, 3, 2)
    mask = torch.tensor([[1, 1, 0]])  # the last position is padding
    assert pool(hidden, mask, PoolingSpec(("cls",), False)).tolist() == [[1.0, 2.0]]
    assert pool(hidden, mask, PoolingSpec(("max",), False)).tolist() == [[3.0, 2.0]]
    assert pool(hidden, mask, PoolingSpec(("mean",), False)).tolist() == [[2.0, -1.0]]
    assert pool(hidden, mask, PoolingSpec(("lasttoken",), False)).tolist() == [[3.0, -4.0]]
    both = pool(hidden, mask, PoolingSpec(("cls", "mean"), True))
    assert both.shape == (1, 4) and abs(float(both.norm()) - 1.0) < 1e-6
