"""``python -m zhisuan.engines.worker`` as the supervisor runs it, and its load states."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
from _worker_fakes import FakeEngine, free_port, serve

from zhisuan.cluster.cores import CPUS_ENV
from zhisuan.engines.worker import create_app

HERE = Path(__file__).resolve().parent


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    return env


def _worker(*args: str) -> list[str]:
    return [sys.executable, "-m", "zhisuan.engines.worker", *args]


def test_loading_then_ready() -> None:
    release = threading.Event()

    def loader() -> FakeEngine:
        release.wait(5)
        return FakeEngine("slow")

    app = create_app(loader, model_name="slow", engine_kind="fake")
    with serve(app, wait_ready=False) as url:
        resp = httpx.get(f"{url}/health")
        assert resp.status_code == 503
        assert resp.json() == {"status": "loading", "model": "slow", "engine": "fake"}
        chat = httpx.post(f"{url}/v1/chat/completions", json={"model": "slow", "messages": []})
        assert chat.status_code == 503
        assert "loading" in chat.json()["error"]["message"]
        release.set()
        deadline = time.monotonic() + 5
        while httpx.get(f"{url}/health").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.01)


def test_failed_load_reports_why() -> None:
    reasons: list[str] = []

    def loader() -> FakeEngine:
        raise OSError("no such file: weights.safetensors")

    loaded: list[int] = []
    app = create_app(
        loader,
        model_name="m",
        engine_kind="fake",
        on_load_failed=reasons.append,
        on_loaded=lambda: loaded.append(1),
    )
    with serve(app, wait_ready=False) as url:
        deadline = time.monotonic() + 5
        while not reasons:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        body = httpx.get(f"{url}/health").json()
    assert body["status"] == "failed"
    assert body["error"] == "OSError: no such file: weights.safetensors"
    assert loaded == []  # a failed load is never settled as loaded


def test_loaded_hook_runs_once_before_the_engine_serves() -> None:
    serving_at_call: list[bool] = []
    app = create_app(
        lambda: FakeEngine("m"),
        model_name="m",
        engine_kind="fake",
        on_loaded=lambda: serving_at_call.append(app.state.worker.serving is not None),
    )
    with serve(app) as url:
        assert httpx.get(f"{url}/health").status_code == 200
    assert serving_at_call == [False]


@pytest.mark.parametrize(
    ("inherited", "planned"),
    [(False, False), (True, False), (True, True)],
    ids=["port", "fd", "fd-planned-cores"],
)
def test_subprocess_worker_serves_and_stops_on_sigterm(inherited: bool, planned: bool) -> None:
    """With its cores planned, a worker started on every core serves from those alone."""
    # with --fd the port stays bound here as well: a worker binding it itself would fail
    core = max(os.sched_getaffinity(0))
    env = _env()
    if planned:
        env[CPUS_ENV] = str(core)
    held = socket.create_server(("127.0.0.1", 0)) if inherited else None
    port = held.getsockname()[1] if held else free_port()
    fds = [held.fileno()] if held else []
    options = json.dumps({"fake": {"eos_after": 3}})
    proc = subprocess.Popen(
        _worker(
            *("--engine", "_worker_fakes:load", "--model-name", "fake-cli"),
            *("--port", str(port), "--options", options),
            *(["--fd", str(fds[0])] if fds else []),
        ),
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        pass_fds=fds,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.05)
        if planned:  # moved there once loaded, before it served: every thread of it
            for tid in os.listdir(f"/proc/{proc.pid}/task"):
                assert os.sched_getaffinity(int(tid)) == {core}
        with openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client:
            out = client.chat.completions.create(
                model="fake-cli", messages=[{"role": "user", "content": "hi"}]
            )
        assert out.choices[0].message.content == "the quick brown"
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert proc.wait(timeout=10) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
        if held is not None:
            held.close()


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = _worker("--model-name", "m", "--port", str(free_port()), *args)
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=30)


def test_load_failure_exits_1_with_one_line() -> None:
    done = _run("--engine", "_worker_fakes:load", "--options", '{"fail": true}')
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert "error: cannot load model m: RuntimeError: the weights are broken" in last
    assert "Traceback" not in done.stderr


def test_unknown_engine_and_bad_options() -> None:
    done = _run("--engine", "nope")
    assert done.returncode == 1
    assert "unknown engine 'nope'" in done.stderr.strip().splitlines()[-1]
    bad = _run("--engine", "upstream", "--options", "[1]")
    assert bad.returncode == 2
    assert "--options must be a JSON object" in bad.stderr


def test_light_workers_never_import_torch() -> None:
    code = """
import sys
from zhisuan.cluster.cores import CPUS_ENV
from zhisuan.engines.worker import create_app, load_engine
import zhisuan.engines.worker.__main__
import zhisuan.engines.llamacpp
options = {"base_url": "http://127.0.0.1:9/v1", "check": False}
engine = load_engine("upstream", None, model_name="m", device="cpu", options=options)
create_app(lambda: engine, model_name="m", engine_kind="upstream")
heavy = sorted(m for m in ("torch", "transformers", "numpy", "llama_cpp") if m in sys.modules)
print(",".join(heavy))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
