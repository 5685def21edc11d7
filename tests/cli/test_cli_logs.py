"""``zhisuan logs MODEL``: the end of the file of a replica's serving worker, which the gateway
names or, with none answering, the home's ``<model>-<index>.log`` link does; ``--all`` lists a
replica's files; a model, replica or log that is not there is one line and a hint."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import pytest
from _fake_gateway import JsonHandler, fake_gateway
from typer.testing import CliRunner

from zhisuan.cli.main import build
from zhisuan.cluster._logs import WorkerLogs
from zhisuan.cluster.base import ReplicaSpec

app = build(["logs"])
SPEC = ReplicaSpec(model="chat", engine="transformers", device="cpu", model_path=None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home whose gateway does not run (nothing listens on its port)."""
    monkeypatch.setenv("ZHISUAN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ZHISUAN_PORT", str(_free_port()))
    monkeypatch.delenv("ZHISUAN_ADMIN_KEY", raising=False)
    return tmp_path / "home"


def _worker(logs: WorkerLogs, index: int, text: str, *, serving: bool) -> Path:
    """A worker of replica ``index`` that wrote ``text``: serving now, or stopped."""
    spec = replace(SPEC, index=index)
    path = logs.new(spec)
    path.write_text(text)
    if serving:
        logs.serving(spec, path)
    else:
        logs.done(spec, path)
    return path


def _run(*args: str) -> tuple[int, str, list[str]]:
    result = CliRunner().invoke(app, ["logs", *args], env={"COLUMNS": "200"})
    assert "Traceback" not in result.output
    return result.exit_code, result.stdout, result.stderr.strip().splitlines()


def _numbered(first: int, last: int) -> str:
    return "".join(f"line {n}\n" for n in range(first, last + 1))


def test_the_last_lines_of_the_serving_workers_file(home: Path) -> None:
    logs = WorkerLogs(home / "logs")
    _worker(logs, 0, "an old worker's line\n", serving=False)
    _worker(logs, 0, _numbered(1, 60), serving=True)
    _worker(logs, 1, "replica 1 here\n", serving=True)
    assert _run("chat") == (0, _numbered(11, 60), [])  # 50 by default
    assert _run("chat", "--lines", "3") == (0, _numbered(58, 60), [])
    assert _run("chat", "-n", "0") == (0, "", [])
    assert _run("chat", "--replica", "1") == (0, "replica 1 here\n", [])


def test_a_line_still_being_written_is_printed_and_ended(home: Path) -> None:
    _worker(WorkerLogs(home / "logs"), 0, "whole\nhalf a li", serving=True)
    assert _run("chat", "-n", "1") == (0, "half a li\n", [])


def test_what_is_not_there_is_one_line_and_a_hint(home: Path) -> None:
    logs = WorkerLogs(home / "logs")
    _worker(logs, 0, "served\n", serving=True)
    _worker(logs, 1, "scaled away\n", serving=False)  # its link went: no worker serves it
    nobody = f"`zhisuan ps` lists the replicas (no gateway answers at {_url()} to ask)"
    assert _run("nope") == (
        2,
        "",
        [f"error: no log of 'nope' in {home / 'logs'}", f"hint: {nobody}"],
    )
    assert _run("chat", "--replica", "3") == (
        2,
        "",
        [
            f"error: no log of replica 3 of 'chat' in {home / 'logs'} "
            "(replicas with logs there: 0, 1)",
            f"hint: {nobody}",
        ],
    )
    assert _run("chat", "--replica", "1") == (
        2,
        "",
        [
            "error: no worker of replica 1 of 'chat' serves",
            "hint: `zhisuan logs chat --replica 1 --all` lists its old files",
        ],
    )
    code, _, lines = _run("chat", "--all", "--follow")
    assert (code, lines[0]) == (2, "error: --all lists the files and follows none")


def test_all_lists_the_replicas_files_newest_first(home: Path) -> None:
    logs = WorkerLogs(home / "logs")
    first = _worker(logs, 0, "1\n", serving=False)
    second = _worker(logs, 0, "2\n", serving=False)
    serving = _worker(logs, 0, "3\n" * 1000, serving=True)
    _worker(logs, 1, "another replica's\n", serving=True)
    code, out, err = _run("chat", "--all")
    assert (code, err) == (0, [])
    cells = _cells(out)
    assert [c[0] for c in cells] == [serving.name, second.name, first.name]
    assert [c[3] for c in cells] == ["2.0 KiB", "2 B", "2 B"]
    assert [c[4] for c in cells] == ["last serving", "stopped", "stopped"]  # no gateway: the link's
    assert out.splitlines()[0] == f"log files of replica 0 of 'chat' in {home / 'logs'}:"


def _cells(out: str) -> list[list[str]]:
    """The cells of the rows of the table in ``out``."""
    rows = [line.split("│")[1:-1] for line in out.splitlines() if line.startswith("│")]
    return [[c.strip() for c in row] for row in rows]


def _url() -> str:
    return f"http://127.0.0.1:{os.environ['ZHISUAN_PORT']}"


def _row(state: str, pid: int | None, log: Path | None, replica: int = 0) -> dict[str, Any]:
    return {
        "model": "chat",
        "replica": replica,
        "state": state,
        "pid": pid,
        "log": None if log is None else str(log),
        "replacing": None,
    }


class _Gateway(JsonHandler):
    """``GET /admin/replicas`` of a gateway whose rows the test sets."""

    rows: ClassVar[list[dict[str, Any]]] = []
    status: ClassVar[int] = 200

    def do_GET(self) -> None:
        if self.path != "/admin/replicas":
            self.answer(404, b"{}")
        elif self.status != 200:
            self.answer(self.status, b'{"error": {"message": "an admin key is needed"}}')
        else:
            self.answer(200, json.dumps(self.rows).encode())


@pytest.fixture
def gateway(home: Path, monkeypatch: pytest.MonkeyPatch) -> type[_Gateway]:
    monkeypatch.setattr(_Gateway, "rows", [])
    monkeypatch.setattr(_Gateway, "status", 200)
    return _Gateway


def test_the_gateway_names_the_file_in_its_own_home(
    home: Path, tmp_path: Path, gateway: type[_Gateway]
) -> None:
    """The gateway's files are read, not those of the home the command was given, and the
    file is the one its serving worker writes, whatever the link says then."""
    ours = WorkerLogs(home / "logs")
    _worker(ours, 0, "this home's, not the gateway's\n", serving=True)
    theirs = WorkerLogs(tmp_path / "elsewhere" / "logs")
    draining = _worker(theirs, 0, "the old settings\n", serving=True)
    serving = _worker(theirs, 0, "the new settings\n", serving=False)  # took over just now
    starting = _worker(theirs, 0, "the newest settings\n", serving=False)
    gateway.rows = [
        {**_row("ready", 4302, serving), "replacing": _row("starting", 4303, starting)},
        _row("draining", 4301, draining),
        _row("ready", 4310, None, replica=1),
    ]
    with fake_gateway(gateway):
        assert _run("chat") == (0, "the new settings\n", [])
        code, out, _ = _run("chat", "--all")
    assert code == 0
    assert f"in {tmp_path / 'elsewhere' / 'logs'}:" in out.splitlines()[0]
    workers = {c[0]: c[4] for c in _cells(out)}
    assert workers == {
        starting.name: "next, starting, pid 4303",
        serving.name: "ready, pid 4302",
        draining.name: "draining, pid 4301",
    }


def test_what_the_gateway_does_not_list_is_one_line_and_a_hint(
    home: Path, gateway: type[_Gateway]
) -> None:
    logs = WorkerLogs(home / "logs")
    gateway.rows = [
        _row("ready", 4302, _worker(logs, 0, "0\n", serving=True)),
        _row("starting", None, None, replica=1),
        _row("draining", 4301, _worker(logs, 2, "scaled away\n", serving=False), replica=2),
    ]
    with fake_gateway(gateway):
        assert _run("chat", "--replica", "3") == (
            2,
            "",
            [
                "error: no replica 3 of 'chat' (it has 2: 0, 1)",
                "hint: `zhisuan ps` lists the replicas",
            ],
        )
        assert _run("chat", "--replica", "1") == (
            2,
            "",
            [
                "error: replica 1 of 'chat' has no log yet (it is starting)",
                "hint: its worker writes one once it starts; `zhisuan ps` lists the replicas",
            ],
        )
        assert _run("chat", "--replica", "2") == (0, "scaled away\n", [])  # it drains on
        assert _run("nope") == (
            2,
            "",
            [
                "error: 'nope' is not deployed (deployed: chat)",
                "hint: `zhisuan ps` lists the replicas",
            ],
        )


def test_a_gateway_that_wants_an_admin_key_says_so(home: Path, gateway: type[_Gateway]) -> None:
    gateway.status = 401
    with fake_gateway(gateway):
        code, _, lines = _run("chat")
    assert code == 2
    assert lines[0].startswith(f"error: the gateway at {_url()} needs an admin key (HTTP 401)")
    assert lines[1].startswith("hint: set ZHISUAN_ADMIN_KEY")


def test_a_file_this_machine_does_not_have_is_one_line_and_a_hint(
    home: Path, tmp_path: Path, gateway: type[_Gateway]
) -> None:
    """A gateway on another machine (``--url``) names a file that is not here."""
    elsewhere = tmp_path / "another-machine" / "logs" / "chat-0.20250131T120000.000000Z.log"
    gateway.rows = [_row("ready", 4302, elsewhere)]
    with fake_gateway(gateway):
        assert _run("chat", "--url", _url()) == (
            2,
            "",
            [
                f"error: cannot read {elsewhere}: No such file or directory",
                "hint: zhisuan logs reads the gateway's files: run it on the gateway's machine, "
                "as the user that runs `zhisuan serve`",
            ],
        )
