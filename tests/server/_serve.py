"""Start a real ``zhisuan serve`` subprocess for tests and benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A running ``zhisuan serve``."""

    proc: subprocess.Popen[bytes]
    url: str
    home: Path
    env: dict[str, str]
    log: Path

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``zhisuan ARGS`` against this server's home and address."""
        return subprocess.run(
            [sys.executable, "-m", "zhisuan", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=check,
        )

    @property
    def admin_headers(self) -> dict[str, str]:
        key = self.env.get("ZHISUAN_ADMIN_KEY")
        return {"Authorization": f"Bearer {key}"} if key else {}

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Seconds until ``/ready`` answered 200."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"zhisuan serve exited:\n{self.log.read_text()[-3000:]}")
            try:
                resp = httpx.get(f"{self.url}/ready", timeout=1.0, headers=self.admin_headers)
                if resp.status_code == 200:
                    return time.monotonic() - start
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"not ready in {timeout}s:\n{self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(home: Path, *extra: str, env: dict[str, str] | None = None) -> Server:
    """Start ``zhisuan serve`` on a free loopback port with ``home`` as its data directory."""
    port = free_port()
    full_env = dict(os.environ)
    full_env.update(
        {
            "ZHISUAN_HOME": str(home),
            "ZHISUAN_HOST": "127.0.0.1",
            "ZHISUAN_PORT": str(port),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }
    )
    full_env.pop("ZHISUAN_DATABASE_URL", None)
    full_env.update(env or {})
    home.mkdir(parents=True, exist_ok=True)
    log = home / "serve.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "zhisuan", "serve", "--log-level", "warning", *extra],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Server(proc, f"http://127.0.0.1:{port}", home, full_env, log)
