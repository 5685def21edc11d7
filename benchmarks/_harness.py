"""Shared set-up for the server benchmarks: a real gateway with the demo chat model."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.server._serve import Server as Server  # these four for the benchmarks too
from tests.server._serve import free_port as free_port
from tests.server._serve import start_server as start_server
from tests.server._share_cli import tenant as tenant

ADMIN = "zs-bench-admin-key-0000000000"
CHAT = "zhisuan-tiny-chat"
TENANT = "bench"


def demo_path() -> str:
    code = "from zhisuan import demo; print(demo.tiny_chat_dir())"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def start_metered(home: Path, *deploy_flags: str) -> tuple[Server, str, str]:
    """A gateway with auth on, the demo chat model priced per token, and a tenant key.

    Returns:
        The server, the tenant's key and the worker's direct endpoint.
    """
    srv = start_server(home, "--auth", "on", env={"ZHISUAN_ADMIN_KEY": ADMIN})
    srv.wait_ready(timeout=60)
    srv.cli("models", "import", demo_path(), "--name", CHAT)
    srv.cli("deploy", CHAT, "--price-in", "0.5", "--price-out", "1.5", *deploy_flags)
    key = tenant(srv, TENANT, "--rpm", "1000000", "--tpm", "1000000000")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        rows = json.loads(srv.cli("ps", "--json").stdout)
        ready = [r for r in rows if r["model"] == CHAT and r["state"] == "ready"]
        if ready:
            return srv, key, str(ready[0]["endpoint"])
        time.sleep(0.2)
    raise TimeoutError("the demo model did not become ready")
