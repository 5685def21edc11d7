"""Training and serving plans: memory, scaling, MoE, bad input, what would work."""

from __future__ import annotations

import pytest

from zhisuan.catalog import load_catalog
from zhisuan.errors import InvalidParameter, NotFound, PlanError
from zhisuan.planner import ServeRequest, TrainRequest, plan_serve, plan_train
from zhisuan.planner._common import Layout
from zhisuan.planner.memory import state_bytes_per_device

TRAIN_KEYS = {"flops", "pf_days", "mfu", "efficiency", "wall_days", "gpu_hours", "energy_mwh",
              "co2_t", "cost", "memory_per_device_gb", "fits"}  # fmt: skip
SERVE_KEYS = {"weights_gb", "kv_cache_gb_per_seq", "max_concurrency", "ttft_ms", "tpot_ms",
              "tokens_per_s", "devices_needed", "cost_per_mtok", "wh_per_ktok", "fits"}  # fmt: skip


def test_train_json_has_the_stable_keys() -> None:
    res = plan_train(TrainRequest(model="llama3-8b", tokens=1e12, device="h100", count=64))
    data = res.to_json()
    assert set(data) >= TRAIN_KEYS
    assert data["fits"] is True and 0.2 < data["mfu"] < 0.7
    assert data["gpu_hours"] == pytest.approx(64 * data["wall_days"] * 24)


def test_mixed_precision_adam_is_16_bytes_per_parameter_sharded_by_zero() -> None:
    model = load_catalog().model("llama-7b")
    assert state_bytes_per_device(model, Layout(zero=0)) == pytest.approx(16 * model.params)
    z1 = state_bytes_per_device(model, Layout(zero=1, dp=8))
    assert z1 == pytest.approx((4 + 12 / 8) * model.params)
    z3 = state_bytes_per_device(model, Layout(zero=3, dp=8, tp=2))
    assert z3 == pytest.approx(16 / 8 * model.params / 2)


def test_moe_flops_use_active_parameters() -> None:
    res = plan_train(TrainRequest(model="deepseek-v3", tokens=14.8e12, device="h800",
                                  count=2048, scaling=False))  # fmt: skip
    active = load_catalog().model("deepseek-v3").active_params
    assert res.flops_6nd == pytest.approx(6 * active * 14.8e12)


def test_bigger_cluster_is_not_proportionally_faster() -> None:
    res = plan_train(TrainRequest(model="gpt3-175b", tokens=300e9, device="a100-80gb",
                                  count=1024))  # fmt: skip
    effs = [row["scaling_efficiency"] for row in res.scaling]
    e2e = [row["end_to_end_efficiency"] for row in res.scaling]
    assert effs[-1] < effs[0] and e2e[-1] < e2e[0]
    days = [row["wall_days"] for row in res.scaling]
    assert days == sorted(days, reverse=True)  # still faster, just not 4x per 4x


def test_energy_modes_and_cost() -> None:
    base = dict(model="llama-7b", tokens=1e12, device="a100-80gb", count=256, scaling=False)
    tdp = plan_train(TrainRequest(**base, pue=1.1))  # type: ignore[arg-type]
    avg = plan_train(TrainRequest(**base, pue=1.1, power="average", avg_power_w=200))  # type: ignore[arg-type]
    assert tdp.energy_mwh == pytest.approx(tdp.gpu_hours * 400 * 1.1 / 1e6)
    assert avg.energy_mwh == pytest.approx(avg.gpu_hours * 200 * 1.1 / 1e6)
    assert tdp.co2_t == pytest.approx(tdp.energy_mwh * 0.5703)
    priced = plan_train(TrainRequest(**base, price_per_hour=2.0))  # type: ignore[arg-type]
    assert priced.cost == pytest.approx(priced.gpu_hours * 2.0)
    bought = plan_train(TrainRequest(**base, cost_mode="buy"))  # type: ignore[arg-type]
    assert bought.cost is not None and bought.cost > 0


def test_fixed_mfu_overrides_the_model() -> None:
    res = plan_train(TrainRequest(model="gpt3-175b", tokens=300e9, device="v100", count=10_000,
                                  mfu=0.2, efficiency=1.0, scaling=False))  # fmt: skip
    assert res.wall_days == pytest.approx(res.flops / (10_000 * 125e12 * 0.2) / 86400)


def test_when_it_does_not_fit_it_says_what_would() -> None:
    res = plan_train(TrainRequest(model="llama3-70b", tokens=1e12, device="a100-80gb", count=8,
                                  tp=1, pp=1, zero=1))  # fmt: skip
    assert res.fits is False
    assert any("does not fit" in a or "needs" in a for a in res.advice)
    assert any("--zero 3" in a or "fits" in a for a in res.advice)
    small = plan_train(TrainRequest(model="llama3.1-405b", tokens=1e12, device="l4", count=8))
    assert small.fits is False and any("devices" in a for a in small.advice)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"count": 0}, PlanError),
        ({"tokens": -5}, PlanError),
        ({"pue": 0.9}, PlanError),
        ({"mfu": 1.5}, PlanError),
        ({"tp": 16, "count": 8}, PlanError),
        ({"device": "h1000"}, NotFound),
        ({"model": "gpt-5"}, NotFound),
    ],
)
def test_bad_training_input(kwargs: dict[str, object], error: type[Exception]) -> None:
    base: dict[str, object] = {"model": "llama-7b", "tokens": 1e12, "device": "h100", "count": 8}
    with pytest.raises(error):
        plan_train(TrainRequest(**{**base, **kwargs}))  # type: ignore[arg-type]


def test_serve_json_has_the_stable_keys_and_weights_by_precision() -> None:
    res = plan_serve(ServeRequest(model="llama2-70b", device="h100", count=8))
    data = res.to_json()
    assert set(data) >= SERVE_KEYS
    params = load_catalog().model("llama2-70b").params
    assert data["weights_gb"] == pytest.approx(params * 2 / 1e9)
    for precision, bytes_ in (("fp8", 1.0), ("int8", 1.0), ("int4", 0.5 + 2 / 128)):
        q = plan_serve(ServeRequest(model="llama2-70b", device="h100", count=8,
                                    precision=precision))  # fmt: skip
        assert q.weights_gb == pytest.approx(params * bytes_ / 1e9)
    # 1024 + 256 tokens x 2 x 80 layers x 8 KV heads x 128 x 2 bytes
    assert data["kv_cache_gb_per_seq"] == pytest.approx(1280 * 2 * 80 * 8 * 128 * 2 / 1e9)


def test_decode_gets_slower_with_batch_and_memory_bounds_concurrency() -> None:
    one = plan_serve(ServeRequest(model="llama3-8b", device="l4", concurrency=1))
    many = plan_serve(ServeRequest(model="llama3-8b", device="l4", concurrency=16))
    assert many.tpot_ms > one.tpot_ms and many.tokens_per_s > one.tokens_per_s
    assert one.bound == "memory-bandwidth"
    assert 0 < one.max_concurrency < 100
    too_many = plan_serve(ServeRequest(model="llama3-8b", device="l4", concurrency=10_000))
    assert too_many.fits is False and too_many.advice


def test_slo_presets_and_devices_for_a_rate() -> None:
    res = plan_serve(ServeRequest(model="llama2-70b", device="h100", count=8,
                                  slo="llama2-70b-interactive", rate=50))  # fmt: skip
    assert res.slo_met and res.ttft_ms <= 450 and res.tpot_ms <= 40
    assert res.devices_needed is not None and res.devices_needed % 8 == 0
    double = plan_serve(ServeRequest(model="llama2-70b", device="h100", count=8,
                                     slo="llama2-70b-interactive", rate=100))  # fmt: skip
    assert double.devices_needed is not None and double.devices_needed >= res.devices_needed
    loose = plan_serve(ServeRequest(model="llama2-70b", device="h100", count=8, slo="llama2-70b"))
    assert loose.tokens_per_s > res.tokens_per_s
    assert res.cost_per_mtok is not None and res.wh_per_ktok > 0


def test_impossible_latency_and_memory_explain_themselves() -> None:
    slow = plan_serve(ServeRequest(model="llama2-70b", device="l4", count=8, tpot_ms=1))
    assert slow.slo_met is False and slow.devices_needed is None and slow.advice
    big = plan_serve(ServeRequest(model="llama3.1-405b", device="rtx-4090", count=1))
    assert big.fits is False
    assert any("--count" in a for a in big.advice)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"count": 0}, PlanError),
        ({"output_tokens": 0}, PlanError),
        ({"precision": "fp4"}, InvalidParameter),
        ({"slo": "nope"}, InvalidParameter),
        ({"rate": -1}, InvalidParameter),
    ],
)
def test_bad_serving_input(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        plan_serve(ServeRequest(**{"model": "llama3-8b", **kwargs}))  # type: ignore[arg-type]
