"""A real ``zhisuan serve --demo`` shared by the server tests of one session."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.server._serve import Server, start_server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("home"), "--demo")
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
