"""``zhisuan serve`` refuses what would fail before it touches the store or starts a replica
(auth off off loopback, an unknown log level, a busy port, a live gateway of the same home),
and writes down the port it listens on, a free one for ``--port 0``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from zhisuan.cli._common import GATEWAY_FILE
from zhisuan.cli.main import build
from zhisuan.settings import Settings

app = build([])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("ZHISUAN_HOME", str(home))
    for name in ("ZHISUAN_PORT", "ZHISUAN_HOST", "ZHISUAN_DATABASE_URL", "ZHISUAN_ADMIN_KEY"):
        monkeypatch.delenv(name, raising=False)
    return home


def _serve(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``zhisuan serve ARGS`` that is expected to refuse (it is killed if it runs on)."""
    cmd = [sys.executable, "-m", "zhisuan", "serve", "--cpu-pinning", "off", *args]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
            pytest.fail(f"zhisuan serve {' '.join(args)} ran instead of refusing:\n{err[-2000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _one_line(done: subprocess.CompletedProcess[str], error: str, hint: str) -> None:
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith(f"error: {error}"), lines
    assert lines[1].startswith(f"hint: {hint}"), lines


def test_a_refused_demo_touches_no_store(home: Path) -> None:
    result = CliRunner().invoke(app, ["serve", "--demo", "--host", "0.0.0.0", "--auth", "off"])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == "error: auth cannot be off when listening on 0.0.0.0"
    assert not (home / "zhisuan.db").exists()  # the demo models were neither imported nor deployed


def test_an_unknown_log_level_is_one_line(home: Path) -> None:
    result = CliRunner().invoke(app, ["serve", "--log-level", "bogus"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: --log-level must be one of critical, error, warning, info, debug, trace, "
        "not 'bogus'"
    ]
    assert not home.exists()


def test_a_busy_port_is_refused_before_anything_starts(home: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = _serve("--port", str(port))
    _one_line(done, f"port {port} on 127.0.0.1 is already in use", "stop what listens there")
    assert not (home / "zhisuan.db").exists()


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{"status": "ok"}')

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def live_gateway(home: Path) -> Iterator[str]:
    """A gateway of ``home`` that is alive (this process) and answers."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    home.mkdir(parents=True)
    (home / GATEWAY_FILE).write_text(json.dumps({"url": url, "pid": os.getpid()}))
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()


def test_a_second_gateway_of_one_home_is_refused(home: Path, live_gateway: str) -> None:
    before = (home / GATEWAY_FILE).read_text()
    done = _serve("--port", str(_free_port()), timeout=30)
    _one_line(done, f"a gateway of this home ({home}) already runs at {live_gateway}", "stop it")
    assert (home / GATEWAY_FILE).read_text() == before  # the first gateway's, untouched


def test_a_gateway_that_does_not_answer_is_not_in_the_way(home: Path) -> None:
    home.mkdir(parents=True)
    closed = _free_port()  # nothing listens there
    entry = {"url": f"http://127.0.0.1:{closed}", "pid": os.getpid()}  # a live pid, reused
    (home / GATEWAY_FILE).write_text(json.dumps(entry))
    from zhisuan.cli._common import refuse_second_gateway

    refuse_second_gateway(Settings())  # returns: nothing to refuse


def test_port_0_writes_down_the_port_it_listens_on(home: Path) -> None:
    cmd = [sys.executable, "-m", "zhisuan", "serve", "--cpu-pinning", "off", "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (home / GATEWAY_FILE).exists():
            assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.1)
        url = json.loads((home / GATEWAY_FILE).read_text())["url"]
        assert not url.endswith(":0")
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out[-2000:]
    assert f"zhisuan gateway on {url}" in out
    assert not (home / GATEWAY_FILE).exists()  # its own address, forgotten as it stopped
