"""``zhisuan ps`` lists a worker still draining (replaced or undeployed) beside the replica
that serves now, and says what it waits for."""

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
