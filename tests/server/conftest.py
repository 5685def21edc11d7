"""A real ``zhisuan serve --demo`` shared by the server tests of one session, and a real
``zhisuan serve --auth on`` shared by the share tests; a failed server test carries the tails
of its server's and workers' logs in its report."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.server._serve import Server, start_server
from tests.server._share_cli import close_clients, start_shared

LOG_LINES = 30


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, Any]:
    report = yield
    if report.failed:
        funcargs: dict[str, Any] = getattr(item, "funcargs", {})
        for srv in funcargs.values():
            if isinstance(srv, Server):
                report.sections.append((f"zhisuan serve logs ({srv.home})", _tails(srv)))
    return report


def _tails(srv: Server) -> str:
    """The last lines of the gateway's log and of every worker's."""
    parts = []
    for log in [srv.log, *sorted((srv.home / "logs").glob("*.log"))]:
        parts.append(f"--- {log.name}\n{_tail(log)}")
    return "\n".join(parts)


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(unreadable: {exc})"
    return "\n".join(line[:300] for line in lines[-LOG_LINES:])


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("home"), "--demo", "--log-level", "info")
    try:
        srv.wait_ready(timeout=120)
        yield srv
    finally:
        srv.stop()


@pytest.fixture()
def client(server: Server) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60
    ) as c:
        yield c


@pytest.fixture(scope="package")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_shared(tmp_path_factory.mktemp("share"))
    try:
        yield srv
    finally:
        close_clients()
        srv.stop()
