"""The built-in catalog: coverage, provenance, computed sizes, lookups and user overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zhisuan.catalog import load_catalog, model_from_hf_config
from zhisuan.errors import InvalidParameter, NotFound

REQUIRED_DEVICES = [
    "v100", "a100", "a100-80gb", "h100-sxm", "h100-pcie", "h800", "h20", "h200", "l40s", "l4",
    "rtx-4090", "mi250x", "mi300x", "gaudi2", "gaudi3", "ascend-910b", "mlu370", "mlu590",
    "br100", "bi-v100", "hygon-dcu", "cpu",
]  # fmt: skip
REQUIRED_MODELS = [
    "gpt3-175b", "opt-175b", "bloom-176b", "llama-65b", "llama2-70b", "llama3-70b",
    "llama3.1-405b", "qwen2.5-72b", "chatglm3-6b", "mixtral-8x7b", "deepseek-v3",
]  # fmt: skip


def test_at_least_twenty_accelerators_with_source_and_confidence() -> None:
    cat = load_catalog()
    assert len(cat.accelerators) >= 20
    for acc in cat.accelerators.values():
        assert acc.source and acc.confidence, acc.id
        assert acc.confidence.split(":")[0].split(" ")[0] in {"high", "medium", "low"}, acc.id
        assert acc.memory_gb > 0 and acc.memory_bw_tbs > 0 and acc.tdp_w > 0
        assert acc.peak_tflops("bf16") > 0
        assert "indicative" in acc.price.note or acc.price.purchase is None


@pytest.mark.parametrize("name", REQUIRED_DEVICES)
def test_required_devices_resolve(name: str) -> None:
    assert load_catalog().accelerator(name).id


@pytest.mark.parametrize("name", REQUIRED_MODELS)
def test_required_models_resolve(name: str) -> None:
    model = load_catalog().model(name)
    assert model.source and model.confidence


def test_computed_sizes_match_published() -> None:
    for model in load_catalog().models.values():
        assert model.published_params_b is not None, model.id
        assert model.params / 1e9 == pytest.approx(model.published_params_b, rel=0.05), model.id
        if model.published_active_b is not None:
            assert model.active_params / 1e9 == pytest.approx(model.published_active_b, rel=0.05)


def test_kv_cache_per_token_by_attention_kind() -> None:
    cat = load_catalog()
    mha = cat.model("llama-65b")  # 2 x 80 layers x 64 heads x 128 x 2 bytes
    assert mha.attention_kind == "mha"
    assert mha.kv_bytes_per_token(2) == 2 * 80 * 64 * 128 * 2
    gqa = cat.model("llama2-70b")
    assert gqa.attention_kind == "gqa"
    assert gqa.kv_bytes_per_token(2) == 2 * 80 * 8 * 128 * 2
    mla = cat.model("deepseek-v3")  # latent 512 + rope 64 per layer
    assert mla.attention_kind == "mla"
    assert mla.kv_bytes_per_token(2) == 61 * (512 + 64) * 2


def test_unknown_names_suggest_close_ones() -> None:
    cat = load_catalog()
    with pytest.raises(NotFound) as dev:
        cat.accelerator("h10")
    assert "h100-sxm" in dev.value.suggestions
    assert dev.value.hint and "did you mean" in dev.value.hint
    with pytest.raises(NotFound) as mod:
        cat.model("llama3-7b")
    assert any(s.startswith("llama") for s in mod.value.suggestions)


def test_user_yaml_overrides_and_adds(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "catalog").mkdir(parents=True)
    (home / "catalog" / "prices.yaml").write_text(
        "accelerators:\n"
        "  - {id: h100, price: {purchase: 200000, hourly: 12, currency: CNY, note: mine}}\n"
        "  - {id: my-npu, memory_gb: 64, memory_bw_tbs: 1.0, tdp_w: 300, bf16: 200}\n",
        encoding="utf-8",
    )
    extra = tmp_path / "models.yaml"
    extra.write_text(
        "models:\n  - {id: tiny, layers: 2, hidden: 64, heads: 4, vocab: 100}\n", encoding="utf-8"
    )
    cat = load_catalog(home=home, extra_paths=[extra])
    h100 = cat.accelerator("h100-sxm")
    assert h100.price.hourly == 12 and h100.price.currency == "CNY"
    assert h100.fp8 == 1979.0  # untouched fields stay
    assert "user-supplied" in cat.accelerator("my-npu").source
    assert cat.model("tiny").layers == 2
    assert load_catalog().accelerator("h100").price.currency == "USD"  # built-in unchanged


def test_bad_user_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("accelerators:\n  - {id: x}\n", encoding="utf-8")
    with pytest.raises(InvalidParameter, match="lacks"):
        load_catalog(extra_paths=[bad])


def _write(tmp_path: Path, name: str, cfg: dict[str, object]) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    return folder / "config.json"


def test_hf_configs_give_the_published_sizes(tmp_path: Path) -> None:
    llama = _write(tmp_path, "llama", {
        "model_type": "llama", "hidden_size": 8192, "num_hidden_layers": 80,
        "num_attention_heads": 64, "num_key_value_heads": 8, "intermediate_size": 28672,
        "vocab_size": 128256, "max_position_embeddings": 131072, "tie_word_embeddings": False,
    })  # fmt: skip
    assert model_from_hf_config(llama).params / 1e9 == pytest.approx(70.55, rel=0.01)
    mixtral = _write(tmp_path, "mixtral", {
        "model_type": "mixtral", "hidden_size": 4096, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
        "vocab_size": 32000, "num_local_experts": 8, "num_experts_per_tok": 2,
        "tie_word_embeddings": False,
    })  # fmt: skip
    mx = model_from_hf_config(mixtral.parent)
    assert mx.params / 1e9 == pytest.approx(46.7, rel=0.01)
    assert mx.active_params / 1e9 == pytest.approx(12.9, rel=0.01)
    ds = _write(tmp_path, "dsv3", {
        "model_type": "deepseek_v3", "hidden_size": 7168, "num_hidden_layers": 61,
        "num_attention_heads": 128, "num_key_value_heads": 128, "intermediate_size": 18432,
        "moe_intermediate_size": 2048, "n_routed_experts": 256, "n_shared_experts": 1,
        "num_experts_per_tok": 8, "first_k_dense_replace": 3, "q_lora_rank": 1536,
        "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
        "v_head_dim": 128, "vocab_size": 129280, "tie_word_embeddings": False,
    })  # fmt: skip
    dsv3 = model_from_hf_config(ds)
    assert dsv3.params / 1e9 == pytest.approx(671, rel=0.01)
    assert dsv3.active_params / 1e9 == pytest.approx(37, rel=0.03)
    assert dsv3.attention_kind == "mla"
    gpt2 = _write(tmp_path, "gpt2", {
        "model_type": "gpt2", "n_embd": 1600, "n_layer": 48, "n_head": 25,
        "vocab_size": 50257, "n_positions": 1024,
    })  # fmt: skip
    assert model_from_hf_config(gpt2).params / 1e9 == pytest.approx(1.56, rel=0.01)
    qwen = _write(tmp_path, "qwen", {
        "model_type": "qwen2", "hidden_size": 3584, "num_hidden_layers": 28,
        "num_attention_heads": 28, "num_key_value_heads": 4, "intermediate_size": 18944,
        "vocab_size": 152064, "tie_word_embeddings": False,
    })  # fmt: skip
    assert model_from_hf_config(qwen).params / 1e9 == pytest.approx(7.62, rel=0.01)


def test_model_lookup_by_path_and_by_store_resolver(tmp_path: Path) -> None:
    path = _write(tmp_path, "m", {
        "model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32,
        "num_attention_heads": 32, "intermediate_size": 11008, "vocab_size": 32000,
        "tie_word_embeddings": False,
    })  # fmt: skip
    cat = load_catalog()
    assert cat.model(str(path)).params / 1e9 == pytest.approx(6.74, rel=0.01)
    found = cat.model("my-store-model", resolver=lambda n: path.parent if n else None)
    assert found.id == "my-store-model"
    with pytest.raises(NotFound):
        cat.model("nothing-here", resolver=lambda n: None)
    with pytest.raises(NotFound):
        cat.model(str(tmp_path / "missing" / "config.json"))
