"""Property-based fuzz of every endpoint from the gateway's own OpenAPI schema: no 5xx.

The gateway runs for real (uvicorn with the gateway's own HTTP protocol on loopback, a real
SQLite store), with auth off and with auth on (called with an admin key); its cluster
backend is a null one that records deployments without starting processes, so fuzzed
deployments never spawn workers or reach the network.
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

ADMIN = "zs-fuzz-admin-key-0123456789"
HOME = Path(tempfile.mkdtemp(prefix="zhisuan-fuzz-"))  # the schema is needed at collection
atexit.register(shutil.rmtree, HOME, ignore_errors=True)
APPS = {
    auth: create_app(Settings(home=HOME / auth, auth=auth, admin_key=ADMIN), backend=NullBackend())
    for auth in ("off", "on")
}
schema = schemathesis.openapi.from_dict(APPS["off"].openapi())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module", params=["off", "on"], ids=["auth-off", "auth-on"])
def gateway(request: pytest.FixtureRequest) -> Iterator[tuple[str, dict[str, str]]]:
    """A gateway's URL and the headers to call it with (the admin key, with auth on)."""
    app = APPS[request.param]
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="error",
            lifespan="on",
            http=protocol_for(app.serve_hot, app.serve_now),  # as ``zhisuan serve`` runs it
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
    headers = {"Authorization": f"Bearer {ADMIN}"} if request.param == "on" else {}
    assert httpx.get(f"{url}/admin/tenants", headers=headers).status_code == 200
    yield url, headers
    server.should_exit = True
    thread.join(10)


@schema.parametrize()
@hypothesis.settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    derandomize=True,
)
def test_no_server_errors(case: schemathesis.Case, gateway: tuple[str, dict[str, str]]) -> None:
    base_url, headers = gateway
    response = case.call(base_url=base_url, headers=headers, timeout=30)
    if headers:  # the admin key went with the fuzzed request
        assert response.request.headers["Authorization"] == headers["Authorization"]
    assert response.status_code < 500, f"{case.method} {case.path}: {response.text[:500]}"
