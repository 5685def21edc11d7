"""Embedding requests sharing forward passes, against a pass of their own each.

Two transformers engines of the bundled all-MiniLM-L6-v2 on this machine's CPU, the same but
for ``embed_group``: on (the default), requests that wait together for the engine's thread
share its forward passes, up to ``embed_batch_size`` texts; off, each request has passes of
its own (the engine's behaviour before requests were grouped). On each in turn,
``--clients`` clients send one sentence per request, each its next request when the last
ends, for ``--seconds``; rounds alternate grouped-alone, alone-grouped, ... so drift in the
machine's speed hits both alike.

Printed per engine: requests per second and the latency p50 / p95, per round and in all;
then the throughput ratio, grouped over alone, with the range of the rounds' ratios.

Run: ``.venv/bin/python benchmarks/bench_embeddings.py [--clients 32] [--rounds 4]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from zhisuan.demo import minilm_dir
from zhisuan.engines.transformers import TransformersEngine, load

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A private model service shares its accelerators between teams.",
    "Tokens per second, latency and energy are what users measure.",
    "Someone is having a meal.",
    "模型即服务",
    "The stock market fell sharply on Monday after the announcement.",
]


async def round_(engine: TransformersEngine, clients: int, seconds: float) -> list[float]:
    """Latencies of the requests that ended within ``seconds``, ``clients`` at a time."""
    end = time.perf_counter() + seconds
    latencies: list[float] = []

    async def client(i: int) -> None:
        n = i
        while time.perf_counter() < end:
            start = time.perf_counter()
            await engine.embed([SENTENCES[n % len(SENTENCES)]], f"tenant-{i % 4}")
            if time.perf_counter() <= end:
                latencies.append(time.perf_counter() - start)
            n += 1

    await asyncio.gather(*(client(i) for i in range(clients)))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per round")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per engine")
    parser.add_argument("--batch", type=int, default=32, help="embed_batch_size")
    args = parser.parse_args()
    options: dict[str, Any] = {"embed_batch_size": args.batch}
    engines = {
        "grouped": load(minilm_dir(), model_name="g", device="cpu", options=options),
        "alone": load(
            minilm_dir(), model_name="a", device="cpu", options=options | {"embed_group": False}
        ),
    }
    for engine in engines.values():  # first passes are slow: leave them out
        asyncio.run(round_(engine, args.clients, 0.5))
    done: dict[str, list[float]] = {name: [] for name in engines}
    rates: dict[str, list[float]] = {name: [] for name in engines}
    names = list(engines)
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            latencies = asyncio.run(round_(engines[name], args.clients, args.seconds))
            done[name] += latencies
            rates[name].append(len(latencies) / args.seconds)
            print(
                f"round {r + 1} {name:>7}: {rates[name][-1]:7.1f} req/s, "
                f"p50 {statistics.median(latencies) * 1e3:6.1f} ms",
                flush=True,
            )
    print(f"\n{args.clients} clients, one sentence per request, batch {args.batch}")
    print("| engine | requests/s | p50 (ms) | p95 (ms) | passes per request |")
    print("|---|---|---|---|---|")
    for name, engine in engines.items():
        lat = sorted(done[name])
        stats = engine.stats()
        per_pass = stats.prefills / max(stats.requests_finished, 1)
        print(
            f"| {name} | {statistics.fmean(rates[name]):.1f} | "
            f"{statistics.median(lat) * 1e3:.1f} | {lat[int(0.95 * (len(lat) - 1))] * 1e3:.1f} | "
            f"{per_pass:.3f} |"
        )
    ratios = [g / a for g, a in zip(rates["grouped"], rates["alone"], strict=True)]
    print(
        f"\nthroughput, grouped over alone: {statistics.fmean(ratios):.2f}x "
        f"(rounds {min(ratios):.2f}-{max(ratios):.2f}x)"
    )
    for engine in engines.values():
        asyncio.run(engine.close())


if __name__ == "__main__":
    main()
