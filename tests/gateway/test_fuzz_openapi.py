"""Property-based fuzz of every endpoint from the gateway's own OpenAPI schema: no 5xx.

The gateway runs for real (uvicorn with the gateway's own HTTP protocol on loopback, a real
SQLite store, auth off); its cluster backend is a null one that records deployments without
starting processes, so fuzzed deployments never spawn workers or reach the network.
"""

from __future__ import annotations

import atexit
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import hypothesis
import pytest
import schemathesis
import uvicorn
from _null_backend import NullBackend

from zhisuan.gateway import create_app
from zhisuan.gateway._protocol import protocol_for
from zhisuan.settings import Settings

HOME = Path(tempfile.mkdtemp(prefix="zhisuan-fuzz-"))  # the schema is needed at collection
atexit.register(shutil.rmtree, HOME, ignore_errors=True)
APP = create_app(Settings(home=HOME, auth="off"), backend=NullBackend())
schema = schemathesis.openapi.from_dict(APP.openapi())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            APP,
            host="127.0.0.1",
            port=port,
            log_level="error",
            lifespan="on",
            http=protocol_for(APP.serve_hot, APP.serve_now),  # as ``zhisuan serve`` runs it
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    yield url
    server.should_exit = True
    thread.join(10)


@schema.parametrize()
@hypothesis.settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    derandomize=True,
)
def test_no_server_errors(case: schemathesis.Case, base_url: str) -> None:
    response = case.call(base_url=base_url, timeout=30)
    assert response.status_code < 500, f"{case.method} {case.path}: {response.text[:500]}"
