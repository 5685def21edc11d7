"""A worker with its heap settled against one without (measured, printed; not a test).

Workers freeze what start-up made and collect their young generation every 10,000
allocations (:func:`zhisuan._heap.settle_heap`). This starts two workers of the demo chat
model on the same core, one as shipped and one with ``settle_heap`` made a no-op (CPython's
defaults: every object of the model walked by each full collection), and loads them in
turn with 64 clients sending 4-token chat completions, rounds alternating between them,
so both see the same machine. Prints each round and the totals: throughput, p50 and p99.

    .venv/bin/python benchmarks/bench_heap.py [--rounds 4] [--seconds 15]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import uvloop

from _alternating import BODY, pct
from _harness import CHAT, demo_path, free_port
from bench_gateway_overhead import steady
from zhisuan.cluster import ReplicaSpec
from zhisuan.cluster.local import worker_command

UNSETTLED = (
    "import runpy, zhisuan._heap as heap; heap.settle_heap = lambda: None; "
    "runpy.run_module('zhisuan.engines.worker', run_name='__main__')"
)


@contextlib.contextmanager
def worker(settled: bool, core: int, logs: Path) -> Iterator[str]:
    """A demo chat worker on ``core``; its base URL."""
    port = free_port()
    spec = ReplicaSpec(CHAT, "transformers", "cpu", demo_path(), options=(("max_batch", 64),))
    cmd = worker_command(spec, port)  # the platform's own: python -m zhisuan.engines.worker ...
    if not settled:
        cmd[1:3] = ["-c", UNSETTLED]
    log = (logs / f"worker-{port}.log").open("wb")
    proc = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: os.sched_setaffinity(0, {core}),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start; see {log.name}")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=4, help="rounds per worker")
    parser.add_argument("--seconds", type=float, default=15, help="measured seconds per round")
    parser.add_argument("--warmup", type=float, default=1.5, help="unmeasured seconds first")
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    BODY["max_tokens"] = 4
    BODY["ignore_eos"] = True
    cores = sorted(os.sched_getaffinity(0))
    engine_core = cores[-1]
    if len(cores) > 1:
        os.sched_setaffinity(0, set(cores) - {engine_core})  # the load generator
    lat: dict[str, list[float]] = {"settled": [], "unsettled": []}
    rps: dict[str, list[float]] = {"settled": [], "unsettled": []}
    with (
        tempfile.TemporaryDirectory() as tmp,
        worker(True, engine_core, Path(tmp)) as settled,
        worker(False, engine_core, Path(tmp)) as unsettled,
    ):
        bases = [("settled", settled), ("unsettled", unsettled)]
        print(f"workers on core {engine_core}, concurrency {args.concurrency}", flush=True)
        for r in range(args.rounds):
            for name, base in bases if r % 2 == 0 else bases[::-1]:
                got = uvloop.run(
                    steady(base, None, False, args.concurrency, args.seconds, args.warmup)
                )
                lat[name] += got
                rps[name].append(len(got) / args.seconds)
                print(
                    f"round {r + 1} {name:<9} {len(got) / args.seconds:7.1f} req/s  "
                    f"p50 {pct(got, 50) * 1e3:7.1f} ms  p99 {pct(got, 99) * 1e3:7.1f} ms",
                    flush=True,
                )
    print()
    for name in ("settled", "unsettled"):
        xs = lat[name]
        print(
            f"{name:<9} {statistics.fmean(rps[name]):7.1f} req/s  "
            f"p50 {pct(xs, 50) * 1e3:7.1f} ms  p99 {pct(xs, 99) * 1e3:7.1f} ms"
        )
    ratios = [a / b for a, b in zip(rps["settled"], rps["unsettled"], strict=True)]
    print(
        f"throughput settled / unsettled: {statistics.fmean(ratios):.3f} "
        f"(rounds {min(ratios):.3f} to {max(ratios):.3f}); p99 "
        f"{pct(lat['unsettled'], 99) / pct(lat['settled'], 99):.2f}x lower settled"
    )


if __name__ == "__main__":
    main()
