"""Plans take finite, meaningful numbers only: NaN and infinity (which would make every answer
so, and the JSON invalid) and zero lengths, negative prices or an unknown precision are one
line from ``zhisuan plan`` and a 400 from ``POST /v1/plan/…``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from zhisuan.cli.plan import app as plan_app
from zhisuan.errors import UserError
from zhisuan.gateway import create_app
from zhisuan.planner.serve import ServeRequest, plan_serve
from zhisuan.planner.train import TrainRequest, plan_train
from zhisuan.settings import Settings

TRAIN = ["train", "--model", "llama-65b", "--json"]


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZHISUAN_HOME", str(tmp_path))


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--tokens", "nan"], "--tokens expects a finite number such as 1.4T"),
        (["--tokens", "inf"], "--tokens expects a finite number"),
        (["--tokens", "1e400"], "--tokens expects a finite number"),
        (["--tokens", "1T", "--batch-tokens", "nan"], "--batch-tokens expects a finite number"),
        (["--tokens", "1T", "--pue", "inf"], "--pue must be a finite number, got inf"),
        (["--tokens", "1T", "--mfu", "nan"], "--mfu must be a finite number, got nan"),
        (["--tokens", "1T", "--seq-len", "0"], "seq-len must be more than zero, got 0"),
        (["--tokens", "1T", "--batch-tokens", "0"], "batch-tokens must be more than zero"),
        (["--tokens", "1T", "--price-per-hour", "-1"], "price-per-hour must be zero or more"),
        (["--tokens", "1T", "--precision", "fp4"], "--precision must be one of fp64, fp32"),
    ],
)
def test_plan_train_refuses_with_one_line(args: list[str], error: str) -> None:
    result = CliRunner().invoke(plan_app, [*TRAIN, *args])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""  # no JSON with NaN in it
    assert result.stderr.strip().splitlines()[0].startswith(f"error: {error}")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tokens": math.nan},
        {"tokens": math.inf},
        {"tokens": 1e12, "grid_kg_per_kwh": math.inf},
        {"tokens": 1e12, "electricity_per_kwh": math.nan},
        {"tokens": 1e12, "seq_len": -5},
        {"tokens": 1e12, "precision": "int2"},
    ],
)
def test_plan_train_refuses_what_cannot_be_planned(kwargs: dict[str, Any]) -> None:
    with pytest.raises(UserError):
        plan_train(TrainRequest(model="llama-65b", **kwargs))


@pytest.mark.parametrize("kwargs", [{"rate": math.inf}, {"pue": math.inf}, {"ttft_ms": math.nan}])
def test_plan_serve_refuses_what_is_not_finite(kwargs: dict[str, Any]) -> None:
    with pytest.raises(UserError):
        plan_serve(ServeRequest(model="llama3-8b", **kwargs))


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    return TestClient(create_app(Settings(home=tmp_path, auth="off")))


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/plan/train", '{"model": "llama-65b", "tokens": 1e400}'),
        ("/v1/plan/train", '{"model": "llama-65b", "tokens": "NaN"}'),
        ("/v1/plan/train", '{"model": "llama-65b", "tokens": 1e12, "pue": "Infinity"}'),
        ("/v1/plan/train", '{"model": "llama-65b", "tokens": 1e12, "seq_len": 0}'),
        ("/v1/plan/serve", '{"model": "llama3-8b", "rate": 1e400}'),
    ],
)
def test_the_plan_api_answers_400(client: TestClient, path: str, body: str) -> None:
    resp = client.post(path, content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("model", ["/etc/passwd", "../x/config.json", "~/m", "a\\b", "x.json"])
def test_the_plan_api_reads_no_path_on_the_server(client: TestClient, model: str) -> None:
    for path, body in (("/v1/plan/train", {"tokens": 1e12}), ("/v1/plan/serve", {})):
        resp = client.post(path, json={"model": model, **body})
        assert resp.status_code == 400, resp.text
        error = resp.json()["error"]
        assert error["param"] == "model" and "not a path on the server" in error["message"]
