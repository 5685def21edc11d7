"""CPU engines leave a core of their own (the event loop's) unless told otherwise."""

from __future__ import annotations

import os

import pytest

from zhisuan.engines.base import cpu_threads


@pytest.mark.parametrize(("cores", "expected"), [(1, 1), (2, 1), (16, 15)])
def test_every_core_but_one_by_default(
    monkeypatch: pytest.MonkeyPatch, cores: int, expected: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    assert cpu_threads() == expected
    assert cpu_threads(None) == expected


def test_an_explicit_count_wins() -> None:
    assert cpu_threads(3) == 3
    assert cpu_threads("2") == 2
