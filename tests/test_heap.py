"""The heap of a server process, settled after start-up."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from zhisuan._heap import YOUNG_THRESHOLD, settle_heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_gc")
def test_settle_heap_freezes_start_up_and_collects_the_young_less_often() -> None:
    gc.unfreeze()
    made_at_start_up = [object() for _ in range(10)]  # a container the collector tracks
    middle, old = gc.get_threshold()[1:]
    settle_heap()
    assert gc.get_freeze_count() > 0
    assert not any(made_at_start_up is o for o in gc.get_objects())  # frozen: not walked
    assert gc.get_threshold() == (YOUNG_THRESHOLD, middle, old)
    assert gc.isenabled()
