"""``zhisuan logs MODEL --follow``, run as a process: it prints what the serving worker writes,
goes on to a successor's file when a rollout moves the link, and Ctrl-C ends it quietly."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from zhisuan.cluster._logs import WorkerLogs
from zhisuan.cluster.base import ReplicaSpec

SPEC = ReplicaSpec(model="chat", engine="transformers", device="cpu", model_path=None)
DEADLINE_S = 60.0
"""How long a test waits for a line before it fails (a safety net, not a measure)."""


class _Follower:
    """``zhisuan logs chat --follow`` in a process of its own, its output read line by line."""

    def __init__(self, home: Path, *args: str) -> None:
        with socket.socket() as s:  # a port nothing listens on: no gateway, the home's files
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "ZHISUAN_HOME": str(home), "ZHISUAN_PORT": str(port)}
        env.pop("ZHISUAN_ADMIN_KEY", None)
        # Ctrl-C as a terminal delivers it: an ignored SIGINT would pass through exec to the
        # command (pytest run as a background job of a shell without job control ignores it)
        ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        if ignored:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "zhisuan", "logs", "chat", "--follow", *args],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        finally:
            if ignored:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
        self._lines: queue.Queue[str | None] = queue.Queue()  # None: the output ended
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def line(self) -> str:
        """The next line it prints."""
        try:
            line = self._lines.get(timeout=DEADLINE_S)
        except queue.Empty:
            pytest.fail("no line came")
        if line is None:
            assert self.proc.stderr is not None
            pytest.fail(f"it ended ({self.proc.wait()}): {self.proc.stderr.read()}")
        return line

    def interrupt(self) -> tuple[int, str]:
        """Ctrl-C; its exit status and what it wrote to stderr."""
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # not left behind following a file
            self.proc.wait()
            raise
        self._reader.join(timeout=DEADLINE_S)  # it read to the end of the output
        assert self.proc.stdout is not None and self.proc.stderr is not None
        with self.proc.stdout, self.proc.stderr:
            return code, self.proc.stderr.read()


def _append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


def test_follow_prints_new_lines_until_ctrl_c(tmp_path: Path) -> None:
    home = tmp_path / "home"
    logs = WorkerLogs(home / "logs")
    path = logs.new(SPEC)
    path.write_text("before\nlast printed\n")
    logs.serving(SPEC, path)
    follower = _Follower(home, "--lines", "1")
    try:
        assert follower.line() == "last printed\n"
        writer = threading.Thread(target=_append, args=(path, "written since\n"))
        writer.start()
        writer.join()
        assert follower.line() == "written since\n"
    finally:
        code, err = follower.interrupt()
    assert (code, err) == (0, "")  # no traceback, nor click's "Aborted!"


def test_follow_goes_on_to_the_successor_a_rollout_links(tmp_path: Path) -> None:
    home = tmp_path / "home"
    logs = WorkerLogs(home / "logs")
    old = logs.new(SPEC)
    old.write_text("the old worker serves\n")
    logs.serving(SPEC, old)
    follower = _Follower(home, "--lines", "1")
    try:
        assert follower.line() == "the old worker serves\n"
        new = logs.new(SPEC)  # a successor starts beside it, in a file of its own
        new.write_text("the successor starts\n")
        _append(old, "the old worker's last request\n")
        assert follower.line() == "the old worker's last request\n"
        logs.serving(SPEC, new)  # it takes over: the link moves
        assert follower.line() == "the successor starts\n"
        _append(old, "draining: not the replica's any more\n")
        _append(new, "the successor serves\n")
        assert follower.line() == "the successor serves\n"
    finally:
        code, err = follower.interrupt()
    assert code == 0
    assert err.split() == (
        f"note: replica 0 of 'chat' now writes {new.name} (a successor took over)".split()
    )
