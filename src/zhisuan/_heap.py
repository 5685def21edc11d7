"""The garbage collector of a long-running server process (the gateway, a worker).

CPython collects its youngest generation every 700 net allocations of container objects.
In the gateway at concurrency 64 the requests in flight hold some 3,000 such objects
(their exchange, answer cycle, callbacks and closures), alive until their request ends, so
every ~15 requests a young collection walked them all: 0.7 ms at the p50 and 1.7 ms at
most, twice a second or more, each one a pause in the middle of a burst of answers. Those
objects die by reference counting when their request ends, so a higher threshold leaves
the collector little to do. The objects made at start-up (modules, the app, its schemas,
the model) never die: frozen, the full collections no longer walk them either.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000
"""Net allocations of container objects between two young collections (CPython's: 700)."""


def settle_heap() -> None:
    """Freeze what start-up made and collect the young generation less often.

    Call it once, when start-up is done and before serving.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
