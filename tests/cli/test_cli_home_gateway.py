"""A running ``zhisuan serve`` writes its address into its home, where the other commands of
that home look for it unless they are given a port."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zhisuan.cli._common import GATEWAY_FILE, forget, home_gateway, write_down
from zhisuan.settings import Settings


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ZHISUAN_HOME", str(tmp_path))
    monkeypatch.delenv("ZHISUAN_PORT", raising=False)
    monkeypatch.delenv("ZHISUAN_HOST", raising=False)
    return tmp_path


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout)


def test_the_written_address_is_found_while_its_gateway_lives(home: Path) -> None:
    assert home_gateway(Settings()) == "http://127.0.0.1:8000"  # nothing written: the default
    write_down(Settings(port=8765, host="0.0.0.0"))
    assert json.loads((home / GATEWAY_FILE).read_text()) == {
        "url": "http://127.0.0.1:8765",
        "pid": os.getpid(),
    }
    assert home_gateway(Settings()) == "http://127.0.0.1:8765"
    assert home_gateway(Settings(port=9001)) == "http://127.0.0.1:9001"  # a port given wins
    forget(Settings())
    assert not (home / GATEWAY_FILE).exists()
    assert home_gateway(Settings()) == "http://127.0.0.1:8000"


@pytest.mark.parametrize("content", ["not json", '{"url": "http://127.0.0.1:8765"}', "[]"])
def test_a_torn_file_or_a_dead_gateways_is_ignored(home: Path, content: str) -> None:
    (home / GATEWAY_FILE).write_text(content)
    assert home_gateway(Settings()) == "http://127.0.0.1:8000"
    dead = {"url": "http://127.0.0.1:8765", "pid": _dead_pid()}  # killed without cleanup
    (home / GATEWAY_FILE).write_text(json.dumps(dead))
    assert home_gateway(Settings()) == "http://127.0.0.1:8000"


def test_a_gateway_forgets_only_its_own_address(home: Path) -> None:
    other = {"url": "http://127.0.0.1:8766", "pid": os.getppid()}  # another, still running
    (home / GATEWAY_FILE).write_text(json.dumps(other))
    forget(Settings())
    assert json.loads((home / GATEWAY_FILE).read_text()) == other
    assert [p.name for p in home.iterdir()] == [GATEWAY_FILE]  # no spare file left either
