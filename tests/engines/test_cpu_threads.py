"""CPU engines leave a core of their own (the event loop's) unless told otherwise."""

from __future__ import annotations

import os

import pytest

from zhisuan.cluster.cores import CPUS_ENV
from zhisuan.engines.base import cpu_threads


@pytest.mark.parametrize(("cores", "expected"), [(1, 1), (2, 1), (16, 15)])
def test_every_core_but_one_by_default(
    monkeypatch: pytest.MonkeyPatch, cores: int, expected: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    monkeypatch.delenv(CPUS_ENV, raising=False)
    assert cpu_threads() == expected
    assert cpu_threads(None) == expected


def test_an_explicit_count_wins() -> None:
    assert cpu_threads(3) == 3
    assert cpu_threads("2") == 2


@pytest.mark.parametrize(("planned", "expected"), [("1", 1), ("1,2,3", 2), ("2,3,4,5,6", 4)])
def test_a_worker_counts_the_cores_it_will_compute_on(
    monkeypatch: pytest.MonkeyPatch, planned: str, expected: int
) -> None:
    """While it loads on every core, a worker sizes its threads for its own slice."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setenv(CPUS_ENV, planned)
    assert cpu_threads() == expected


@pytest.mark.parametrize("planned", ["", "x", " "])
def test_a_missing_or_unreadable_plan_counts_the_affinity(
    monkeypatch: pytest.MonkeyPatch, planned: str
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(4)))
    monkeypatch.setenv(CPUS_ENV, planned)
    assert cpu_threads() == 3
