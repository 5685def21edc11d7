"""Tenants, keys and usage of a running ``zhisuan serve``, through its CLI (as an operator)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from tests.server._serve import Server


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
