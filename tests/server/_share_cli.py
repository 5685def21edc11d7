"""Tenants, keys and usage of a running ``zhisuan serve``, through its CLI (as an operator),
and the ``--auth on`` server the share tests have in common (the ``shared`` fixture)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import openai

from tests.server._serve import Server, start_server

CHAT = "zhisuan-tiny-chat"
EMBED = "minilm-embed"
ADMIN = "zs-test-admin-key-0123456789"
HI = [{"role": "user", "content": "Hi"}]
IGNORE = {"ignore_eos": True}
PRICE = 1_000_000.0  # per million tokens: one unit of money per token
_CLIENTS: list[openai.OpenAI] = []


def start_shared(home: Path) -> Server:
    """``zhisuan serve --auth on`` with the demo chat and embedding models deployed, set up
    through the CLI as an operator would, the chat model priced at one unit per token."""
    srv = start_server(home, "--auth", "on", env={"ZHISUAN_ADMIN_KEY": ADMIN})
    try:
        srv.wait_ready(timeout=60)
        srv.cli("models", "import", demo_path(srv, "tiny_chat_dir"), "--name", CHAT)
        embed_dir = demo_path(srv, "minilm_dir")
        srv.cli("models", "import", embed_dir, "--name", EMBED, "--task", "embedding")
        srv.cli("deploy", CHAT, "--price-in", str(PRICE), "--price-out", str(PRICE))
        srv.cli("deploy", EMBED)
        srv.wait_ready(timeout=120)
        wait_models(srv, {CHAT, EMBED})
    except BaseException:
        srv.stop()
        raise
    return srv


def client(srv: Server, key: str) -> openai.OpenAI:
    """A client for ``key``, closed by :func:`close_clients`."""
    c = openai.OpenAI(base_url=f"{srv.url}/v1", api_key=key, max_retries=0, timeout=60)
    _CLIENTS.append(c)
    return c


def close_clients() -> None:
    while _CLIENTS:
        _CLIENTS.pop().close()


def demo_path(srv: Server, attr: str) -> str:
    """Where the bundled demo model ``attr`` (e.g. ``tiny_chat_dir``) lies, as the server
    sees it."""
    code = f"from zhisuan import demo; print(demo.{attr}())"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=srv.env
    )
    return done.stdout.strip()


def tenant(srv: Server, name: str, *flags: str) -> str:
    """Create tenant ``name`` and a key for it; returns the key."""
    srv.cli("tenants", "create", name, *flags)
    return key_for(srv, name)


def key_for(srv: Server, name: str, *flags: str) -> str:
    out = srv.cli("keys", "create", "--tenant", name, *flags).stdout
    return out.strip().splitlines()[-1]


def usage(srv: Server, *flags: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(srv.cli("usage", "--json", *flags).stdout)
    return rows


def wait_usage(srv: Server, name: str, predicate: Any, timeout: float = 10) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        rows = usage(srv, "--tenant", name)
        if predicate(rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def last_used(srv: Server, key: str) -> str | None:
    """The key's ``last_used_at`` as ``keys list --json`` shows it."""
    listed = json.loads(srv.cli("keys", "list", "--json").stdout)
    found: str | None = next(k["last_used_at"] for k in listed if k["prefix"] == key[:12])
    return found


def wait_models(srv: Server, names: set[str]) -> None:
    """Wait until every model of ``names`` has a ready replica."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        rows = json.loads(srv.cli("ps", "--json").stdout)
        if names <= {r["model"] for r in rows if r["state"] == "ready"}:
            return
        time.sleep(0.2)
    raise TimeoutError(f"{names} not ready")
