"""The garbage collector of a long-running server process (the gateway, a worker).

CPython collects its youngest generation every 700 net allocations of container objects.
In the gateway at concurrency 64 the requests in flight hold some 3,000 such objects
(their exchange, answer cycle, callbacks and closures), alive until their request ends,
and a young collection walked them all about every 150 requests (3 a second): 0.5-0.7 ms,
1.7 ms at most, a pause in the middle of a burst of answers. In a worker, the full
collections walked the model's objects: 230 ms each, every 3 seconds at concurrency 64,
with neither the event loop nor the engine thread running. Requests make no reference
cycles (a closed connection does, some 20 objects): their objects die by reference
counting, so a higher threshold leaves the collector little to do; and the objects made
at start-up (modules, the app, its schemas, the model) never die, so, frozen, no
collection walks them again.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000
"""Net allocations of container objects between two young collections (CPython's: 700)."""


def settle_heap() -> None:
    """Freeze what start-up made and collect the young generation less often.

    Call it once, when start-up is done and before serving. The young and middle
    generations are collected first (0.4 ms); a full collection would walk every object
    (0.2 s of a worker's start with the demo model) to find some 20 more of garbage,
    which stay frozen instead.
    """
    gc.collect(1)
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
