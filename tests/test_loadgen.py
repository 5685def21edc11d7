"""The gateway overhead benchmark's native load generator (``benchmarks/_loadgen.c``),
against small keep-alive HTTP/1.1 servers: what it times and reads must be what they
answered."""

from __future__ import annotations

import shutil
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import _native
from _alternating import ERRORS

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")


class _Answers(BaseHTTPRequestHandler):
    """``/json``: a body with a length and the worker's time in ``server-timing``;
    ``/fail``: HTTP 500; any other path: chunks, the worker's time in the last event's
    comment line."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        if self.path == "/fail/v1/chat/completions":
            self._whole(500, b'{"error": {"message": "no"}}', b"worker;dur=1")
        elif self.path == "/json/v1/chat/completions":
            self._whole(200, b'{"choices": []}', b"worker;dur=2.5")
        else:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            events = [b'data: {"a": 1}\n\n', b'data: {"b": 2}\n\n']
            events.append(b": worker;dur=1.25\n\ndata: [DONE]\n\n")
            for event in events:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.write(b"0\r\n\r\n")

    def _whole(self, status: int, body: bytes, timing: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.send_header("server-timing", timing.decode())
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def exe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        built = _native.build()
    assert built is not None
    yield built


def test_it_times_both_kinds_of_answer_and_reads_the_workers_time(exe: Path, base: str) -> None:
    done: list[int] = []
    paths: list[tuple[str, str | None]] = [(f"{base}/json", "k"), (f"{base}/stream", None)]
    answers = _native.run(exe, paths, True, 4, 0.6, 0.2, done)
    by_path = [[a for a in answers if a[0] == p] for p in (0, 1)]
    assert all(len(got) > 10 for got in by_path)
    # each client sends to the paths in turn
    assert abs(len(by_path[0]) - len(by_path[1])) <= 4
    assert done == [len(answers) + 2]  # and one unmeasured request per path first
    assert min(a[1] for a in answers) < 0 < max(a[1] for a in answers)
    for (_, _, latency, own, ok), worker in [(a, 2.5e-3) for a in by_path[0]] + [
        (a, 1.25e-3) for a in by_path[1]
    ]:
        assert ok and 0 < latency < 1
        assert own == pytest.approx(latency - worker, abs=1e-8)


def test_windows_hold_the_requests_that_started_in_them(exe: Path, base: str) -> None:
    paths: list[tuple[str, str | None]] = [(f"{base}/json", None), (f"{base}/stream", None)]
    windows = _native.mixed(exe, paths, False, 2, 0.9, 0.1, 0.3)
    assert len(windows) == 3
    assert all(direct and other for direct, other in windows)
    steady = _native.steady(exe, f"{base}/json", None, False, 3, 0.4, 0.1)
    assert steady and all(0 < x < 0.4 for x in steady)


def test_failed_answers_are_counted_not_timed(exe: Path, base: str) -> None:
    ERRORS.clear()
    paths: list[tuple[str, str | None]] = [(f"{base}/json", None), (f"{base}/fail", None)]
    answers = _native.run(exe, paths, False, 2, 0.3, 0.0)
    assert {(path, ok) for path, *_, ok in answers} == {(0, True), (1, False)}
    failed = sum(not ok for *_, ok in answers)
    assert {f"{base}/fail HTTP 500": failed} == ERRORS
    assert abs(failed - (len(answers) - failed)) <= 2
    assert _native.mixed(exe, paths, False, 1, 0.4, 0.0, 0.2)[0][1] == []  # none timed


def test_at_concurrency_1_it_sends_rounds_in_turn(exe: Path, base: str) -> None:
    paths: list[tuple[str, str | None]] = [
        (f"{base}/json", None),
        (f"{base}/stream", None),
        (f"{base}/also", "k"),
    ]
    got = _native.alternate(exe, paths, False, 7)
    assert [len(got[b]) for b, _ in paths] == [7, 7, 7]
    ERRORS.clear()
    failing = _native.alternate(exe, [(f"{base}/json", None), (f"{base}/fail", None)], False, 4)
    assert failing == {f"{base}/json": [], f"{base}/fail": []}
    assert {f"{base}/fail HTTP 500": 4 + 5} == ERRORS  # the unmeasured rounds' too


def test_an_unreachable_path_is_a_clear_error(exe: Path, base: str) -> None:
    with pytest.raises(RuntimeError, match=r"cannot connect to 127\.0\.0\.1:9$"):
        _native.run(exe, [("http://127.0.0.1:9", None)], False, 1, 0.1, 0.0)


@pytest.mark.parametrize(
    ("compiler", "said"),
    [("no-such-compiler", "no C compiler"), ("false", "false could not build _loadgen.c")],
)
def test_without_a_working_compiler_it_says_why(
    compiler: str,
    said: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CC", compiler)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert _native.build() is None
    assert said in capsys.readouterr().out
    assert not list(tmp_path.rglob("loadgen-*"))  # nothing half-built left behind
