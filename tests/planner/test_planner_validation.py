"""The planner reproduces published figures; the fitted constants are not hand-tuned."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from zhisuan.catalog import load_catalog
from zhisuan.planner import FITTED, Report, run_validation
from zhisuan.planner.costs import energy_mwh
from zhisuan.planner.fit import calibration_runs, fit
from zhisuan.planner.flops import PF_DAY, flops_6nd
from zhisuan.planner.train import TrainRequest, plan_train

HERE = Path(__file__).parent
PACKAGE_COPY = HERE.parents[1] / "src" / "zhisuan" / "planner" / "data" / "published_runs.yaml"


@pytest.fixture(scope="module")
def report() -> Report:
    return run_validation()


def test_test_copy_of_published_runs_matches_the_package_copy() -> None:
    test_copy = yaml.safe_load((HERE / "published_runs.yaml").read_text(encoding="utf-8"))
    package = yaml.safe_load(PACKAGE_COPY.read_text(encoding="utf-8"))
    assert test_copy == package
    for run in package["runs"]:
        assert run["source"], run["id"]
        assert run["role"] in {"calibration", "test", "check", "flag"}


def test_gpt3_6nd_within_one_percent() -> None:
    flops = flops_6nd(load_catalog().model("gpt3-175b"), 300e9)
    assert flops == pytest.approx(3.14e23, rel=0.01)
    assert flops / PF_DAY == pytest.approx(3640, rel=0.01)


def test_gpt3_energy_from_patterson_inputs_within_three_percent() -> None:
    assert energy_mwh(10_000, 14.8 * 24, watts=330, pue=1.1) == pytest.approx(1287, rel=0.03)


def test_seed003_claim_is_flagged_as_inconsistent(report: Report) -> None:
    row = next(r for r in report.rows if r.run.id == "seed003-1000-v100")
    assert row.ok is True  # the inconsistency was detected
    assert "INCONSISTENT" in row.note and "148 days" in row.note
    assert row.predicted is not None and row.predicted > 3 * 14.8


@pytest.mark.parametrize(
    ("model", "tokens", "published"),
    [
        ("llama-7b", 1.0e12, 82_432),
        ("llama-13b", 1.0e12, 135_168),
        ("llama-33b", 1.4e12, 530_432),
        ("llama-65b", 1.4e12, 1_022_362),
    ],
)
def test_llama_gpu_hours(model: str, tokens: float, published: float) -> None:
    req = TrainRequest(model=model, tokens=tokens, device="a100-80gb", count=2048,
                       batch_tokens=4e6, efficiency=1.0, scaling=False)  # fmt: skip
    assert plan_train(req).gpu_hours == pytest.approx(published, rel=0.15)


def test_median_error_on_test_rows_at_most_ten_percent(report: Report) -> None:
    assert len(report.errors("test")) >= 10
    assert report.median_test_error <= 0.10


def test_every_check_row_passes(report: Report) -> None:
    failed = [r.run.id for r in report.rows if r.run.role == "check" and r.ok is False]
    assert failed == []


def test_calibration_and_test_rows_are_disjoint(report: Report) -> None:
    cal = {r.id for r in calibration_runs()}
    test = {r.run.id for r in report.rows if r.run.role == "test"}
    assert cal and test and not cal & test


def test_recorded_constants_are_what_the_fit_gives() -> None:
    refit = fit()
    assert refit.u_max == pytest.approx(FITTED.u_max, rel=1e-3)
    assert refit.c_kernel == pytest.approx(FITTED.c_kernel, rel=1e-3)
    assert refit.k_comm == pytest.approx(FITTED.k_comm, rel=1e-3)
