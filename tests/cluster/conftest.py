from __future__ import annotations

import pytest
from _fake_workers import FAKES


@pytest.fixture
def fake_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers started by the test find the fake engine (``--engine _worker_fakes:load``)."""
    monkeypatch.setenv("PYTHONPATH", str(FAKES))
