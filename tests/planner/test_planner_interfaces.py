"""`zhisuan plan …` / `zhisuan catalog …` commands and the /v1/plan router."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from zhisuan import demo
from zhisuan.cli.catalog import app as catalog_app
from zhisuan.cli.plan import app as plan_app
from zhisuan.errors import ZhisuanError
from zhisuan.gateway.routers.plan import router

runner = CliRunner()


@pytest.fixture(autouse=True)
def _home(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZHISUAN_HOME", str(tmp_path))


def _json(args: list[str], app: Any = plan_app) -> Any:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_plan_train_json_and_table() -> None:
    args = ["train", "--model", "gpt3-175b", "--tokens", "300B", "--device", "v100",
            "--count", "10000", "--pue", "1.1", "--power", "average", "--grid-kg-per-kwh",
            "0.429", "--price-per-hour", "1.5", "--mfu", "0.2"]  # fmt: skip
    data = _json([*args, "--json"])
    assert data["flops"] > 3.1e23 and data["mfu"] == 0.2 and data["fits"] is True
    table = runner.invoke(plan_app, args)
    assert table.exit_code == 0 and "Training plan" in table.stdout


def test_plan_serve_json_and_table() -> None:
    args = ["serve", "--model", "llama2-70b", "--device", "h100", "--count", "8",
            "--prompt-tokens", "1024", "--output-tokens", "256", "--rate", "10",
            "--slo", "llama2-70b"]  # fmt: skip
    data = _json([*args, "--json"])
    assert data["devices_needed"] >= 8 and data["ttft_ms"] <= 2000
    assert "Serving plan" in runner.invoke(plan_app, args).stdout


def test_plan_compare_train_and_serve() -> None:
    args = ["compare", "--model", "llama3-8b", "--device", "h100,a100-80gb", "--device",
            "ascend-910b", "--tokens", "1T", "--count", "64", "--json"]  # fmt: skip
    rows = _json(args)
    assert [r["device"] for r in rows] == ["h100-sxm", "a100-80gb", "ascend-910b"]
    assert rows[0]["wall_days"] < rows[1]["wall_days"]
    serve = runner.invoke(plan_app, ["compare", "--model", "qwen2.5-7b", "--device", "l4,l40s"])
    assert serve.exit_code == 0 and "l40s" in serve.stdout


def test_plan_validate_prints_roles_and_median() -> None:
    result = runner.invoke(plan_app, ["validate"])
    assert result.exit_code == 0
    for word in ("calib", "test", "check", "flag", "INCONSISTENT", "median"):
        assert word in result.stdout
    data = _json(["validate", "--json"])
    assert data["median_abs_error_test"] <= 0.10 and data["calibration_rows"]


def test_unknown_device_is_one_red_line_and_exit_2() -> None:
    result = runner.invoke(plan_app, ["train", "--model", "llama-7b", "--tokens", "1T",
                                      "--device", "h10"])  # fmt: skip
    assert result.exit_code == 2
    assert "unknown device" in result.stderr and "h100-sxm" in result.stderr
    assert "Traceback" not in result.output


def test_impossible_plan_explains() -> None:
    zero = runner.invoke(plan_app, ["train", "--model", "llama-7b", "--tokens", "1T",
                                    "--count", "0"])  # fmt: skip
    assert zero.exit_code == 2 and "at least one device" in zero.stderr
    bad = runner.invoke(plan_app, ["train", "--model", "llama-7b", "--tokens", "lots"])
    assert bad.exit_code == 2 and "--tokens" in bad.stderr
    nofit = runner.invoke(plan_app, ["train", "--model", "llama3.1-405b", "--tokens", "1T",
                                     "--device", "l4", "--count", "8"])  # fmt: skip
    assert nofit.exit_code == 0 and "advice" in nofit.stdout


def test_catalog_commands() -> None:
    devices = _json(["devices", "--json"], catalog_app)
    assert len(devices) >= 20 and all(d["source"] for d in devices)
    models = _json(["models", "--json"], catalog_app)
    assert any(m["id"] == "deepseek-v3" and m["attention"] == "mla" for m in models)
    assert runner.invoke(catalog_app, ["devices"]).exit_code == 0
    assert runner.invoke(catalog_app, ["models", "--family", "llama3"]).exit_code == 0
    shown = _json(["show", "mi300x"], catalog_app)
    assert shown["memory_gb"] == 192
    missing = runner.invoke(catalog_app, ["show", "nope-123"])
    assert missing.exit_code == 2


@pytest.fixture
def client() -> TestClient:
    app = FastAPI()

    @app.exception_handler(ZhisuanError)
    async def _err(request: Request, exc: ZhisuanError) -> JSONResponse:
        body = exc.to_body()
        body["error"]["suggestions"] = getattr(exc, "suggestions", [])
        return JSONResponse(body, status_code=exc.status_code)

    app.include_router(router)
    return TestClient(app)


def test_router_train_and_serve(client: TestClient) -> None:
    train = client.post("/v1/plan/train", json={"model": "llama-65b", "tokens": 1.4e12,
                                                "device": "a100-80gb", "count": 2048})  # fmt: skip
    assert train.status_code == 200
    assert {"flops", "wall_days", "fits", "co2_t"} <= set(train.json())
    body = {"model": "llama2-70b", "device": "h100", "count": 8, "slo": "llama2-70b", "rate": 5}
    serve = client.post("/v1/plan/serve", json=body)
    assert serve.status_code == 200 and serve.json()["devices_needed"] >= 8


def test_router_errors(client: TestClient) -> None:
    missing = client.post("/v1/plan/train", json={"model": "llama-7b", "tokens": 1e12,
                                                  "device": "h10"})  # fmt: skip
    assert missing.status_code == 404
    assert "h100-sxm" in missing.json()["error"]["suggestions"]
    zero = client.post("/v1/plan/serve", json={"model": "llama-7b", "count": 0})
    assert zero.status_code == 400 and zero.json()["error"]["code"] == "impossible_plan"
    extra = client.post("/v1/plan/train", json={"model": "x", "tokens": 1, "bogus": 1})
    assert extra.status_code == 422


def test_router_reads_no_file_of_the_servers_directory(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a bare name that happens to be a model directory (or a GGUF file) where the server runs
    # is not read: the planner API takes catalog ids only
    shutil.copytree(demo.tiny_chat_dir(), tmp_path / "probe")
    monkeypatch.chdir(tmp_path)
    for path in ("train", "serve"):
        body: dict[str, Any] = {"model": "probe", "device": "h100"}
        if path == "train":
            body["tokens"] = 1e9
        answer = client.post(f"/v1/plan/{path}", json=body)
        assert answer.status_code == 404, answer.text
        assert "probe" in answer.json()["error"]["message"]
