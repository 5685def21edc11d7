"""``zhisuan ps`` lists a worker still draining (replaced or undeployed) beside the replica
that serves now, with its uptime, and says what it waits for and where it writes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from _fake_gateway import JsonHandler, fake_gateway
from typer.testing import CliRunner

from zhisuan.cli.main import build

app = build([])


def _row(state: str, pid: int, outstanding: int = 0) -> dict[str, Any]:
    return {
        "model": "chat",
        "replica": 0,
        "engine": "transformers",
        "state": state,
        "pid": pid,
        "device": "cpu",
        "cpus": None,
        "endpoint": f"http://127.0.0.1:{pid}",
        "uptime_s": 12.0 if state == "ready" else 0.0,
        "restarts": 0,
        "outstanding": outstanding,
        "last_error": None,
        "replacing": None,
    }


class _Gateway(JsonHandler):
    """``GET /admin/replicas`` during a rollout: the successor serves, the old worker drains."""

    rows: ClassVar[list[dict[str, Any]]] = [_row("ready", 4302), _row("draining", 4301, 3)]

    def do_GET(self) -> None:
        if self.path == "/admin/replicas":
            self.answer(200, json.dumps(self.rows).encode())
        else:
            self.answer(404, b"{}")


@pytest.fixture
def gateway(home_env: str) -> Iterator[None]:
    with fake_gateway(_Gateway):
        yield


@pytest.mark.usefixtures("gateway")
def test_a_draining_worker_is_listed_and_explained() -> None:
    result = CliRunner().invoke(app, ["ps"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    table = [line for line in result.stdout.splitlines() if "4301" in line or "4302" in line]
    assert len(table) == 3 and "ready" in table[0] and "draining" in table[1]
    assert table[2] == (
        "chat #0: pid 4301 takes no new request and stops once its 3 request(s) in flight are done"
    )
    listed = CliRunner().invoke(app, ["ps", "--json"])
    assert [r["state"] for r in json.loads(listed.stdout)] == ["ready", "draining"]


class _Logs(_Gateway):
    """The rows as a gateway of this version gives them: each worker's log file too."""

    rows: ClassVar[list[dict[str, Any]]] = [
        {**_row("ready", 4302), "log": "/home/logs/chat-0.20250131T120500.000000Z.log"},
        {
            **_row("draining", 4301, 1),
            "uptime_s": 3600.0,  # it served an hour, and finishes its request
            "log": "/home/logs/chat-0.20250131T120000.000000Z.log",
        },
    ]


def test_a_draining_worker_shows_its_uptime_and_its_log(home_env: str) -> None:
    with fake_gateway(_Logs):
        result = CliRunner().invoke(app, ["ps"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    [row] = [line for line in result.stdout.splitlines() if "draining" in line]
    assert "3600s" in row
    assert result.stdout.splitlines()[-1] == (
        "chat #0: pid 4301 takes no new request and stops once its 1 request(s) in flight are "
        "done; it writes /home/logs/chat-0.20250131T120000.000000Z.log"
    )
