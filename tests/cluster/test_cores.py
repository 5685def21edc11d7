"""The gateway keeps a core; CPU replicas share the rest, each on its own slice."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from zhisuan.cluster import cores
from zhisuan.cluster.base import ReplicaSpec


def spec(
    model: str, device: str = "cpu", engine: str = "transformers", index: int = 0
) -> ReplicaSpec:
    return ReplicaSpec(model=model, engine=engine, device=device, model_path=None, index=index)


def test_off_or_one_core_pins_nothing() -> None:
    assert cores.plan("off", [0, 1, 2, 3]) is None
    assert cores.plan("auto", [3]) is None


def test_the_gateway_keeps_the_first_core() -> None:
    layout = cores.plan("auto", [1, 0])
    assert layout is not None
    assert layout.gateway == {0}
    assert layout.workers == (1,)
    assert layout.every == {0, 1}


def test_a_large_host_keeps_two_cores_and_follows_the_allowed_set() -> None:
    layout = cores.plan("auto", range(16))
    assert layout is not None
    assert layout.gateway == {0, 1}
    assert layout.workers == tuple(range(2, 16))
    odd = cores.plan("auto", [9, 3, 5])
    assert odd is not None
    assert odd.gateway == {3}
    assert odd.workers == (5, 9)


def test_slices_are_contiguous_disjoint_and_cover_the_cores() -> None:
    layout = cores.plan("auto", range(8))
    assert layout is not None
    workers = layout.workers  # 2..7: six cores
    for count in range(1, 7):
        slices = layout.slices(count)
        assert len(slices) == count
        assert all(slices)
        assert sorted(c for s in slices for c in s) == list(workers)
        assert all(max(s) - min(s) + 1 == len(s) for s in slices)
    assert layout.slices(2) == [{2, 3, 4}, {5, 6, 7}]


def test_more_replicas_than_cores_deal_one_core_each_round_the_cores() -> None:
    layout = cores.plan("auto", range(3))
    assert layout is not None
    assert layout.slices(5) == [{1}, {2}, {1}, {2}, {1}]


def test_only_cpu_replicas_are_pinned() -> None:
    layout = cores.plan("auto", range(6))
    assert layout is not None
    specs = [
        spec("a", index=0),
        spec("gpu", device="cuda:0"),
        spec("a", index=1),
        spec("remote", engine="upstream"),
    ]
    placed = layout.assign(specs)
    assert placed["a#0"] == {1, 2}
    assert placed["a#1"] == {3, 4, 5}
    assert placed["gpu#0"] == set(range(6))
    assert placed["remote#0"] == set(range(6))


def test_describe_writes_ranges() -> None:
    assert cores.describe([0]) == "0"
    assert cores.describe([3, 1, 2]) == "1-3"
    assert cores.describe([1, 3, 5, 6, 7]) == "1,3,5-7"


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs Linux and two cores",
)
def test_pin_moves_every_thread_of_a_live_process() -> None:
    code = "import threading, time; threading.Thread(target=time.sleep, args=(30,)).start()"
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        first = min(os.sched_getaffinity(0))
        deadline = time.monotonic() + 10
        while len(os.listdir(f"/proc/{proc.pid}/task")) < 2:  # the second thread is up
            assert time.monotonic() < deadline, "the child's thread did not start"
            time.sleep(0.01)
        cores.pin(proc.pid, {first})
        for tid in os.listdir(f"/proc/{proc.pid}/task"):
            assert os.sched_getaffinity(int(tid)) == {first}
    finally:
        proc.kill()
        proc.wait()
    cores.pin(proc.pid, {first})  # gone: nothing to move, nothing raised
