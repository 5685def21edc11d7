"""A full queue on the transformers engine: free slots held for rows about to end vs
admitted at every iteration (measured, printed; not a test).

More requests than the batch has rows: every iteration that admits waiting requests runs
a prefill pass of its own. The engine holds free slots one step while rows reach their
token budget, so that both groups are prefilled in one pass (``Batcher._hold``). This
compares it, side by side in one run, with the same engine admitting at every iteration:
``--clients`` callers each send their next request when the last ends, to a batch of
``--max-batch`` rows, for two sets of budgets (every request ``--short`` tokens; and
budgets from 2 to 64 tokens mixed). Callers start at random times within 50 ms and wait
a random 0 to ``--think-ms`` before each next request, as callers across a network arrive
spread out rather than together (the same draws for both policies).
Rounds alternate between the two policies, the order swapped every round. Prints tokens
per second, requests per second and rows per prefill.

    .venv/bin/python benchmarks/bench_queue_groups.py [--rounds 4] [--seconds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time

from zhisuan.demo import tiny_chat_dir
from zhisuan.engines.transformers import TransformersEngine, load
from zhisuan.engines.transformers._batcher import Batcher
from zhisuan.protocol import SamplingParams

PROMPTS = ["The quick brown fox", "你好，世界！", "Numbers 0 1 2 3", "A private model service"]
MIXED = [2, 4, 8, 16, 32, 64]


async def _load(
    engine: TransformersEngine, budgets: list[int], seconds: float, think_s: float
) -> tuple[int, int]:
    """Tokens and requests finished in ``seconds`` by one caller per budget."""
    end = time.perf_counter() + seconds
    pauses = random.Random(0)
    starts = [pauses.uniform(0, 0.05) for _ in budgets]
    tokens = requests = 0

    async def caller(i: int, budget: int) -> None:
        nonlocal tokens, requests
        params = SamplingParams(max_tokens=budget, temperature=0.0)
        await asyncio.sleep(starts[i])
        while time.perf_counter() < end:
            last = 0
            async for delta in engine.generate(PROMPTS[i % 4], params, "b", ignore_eos=True):
                last = delta.completion_tokens
            if time.perf_counter() <= end:
                tokens, requests = tokens + last, requests + 1
            await asyncio.sleep(pauses.uniform(0, think_s))

    await asyncio.gather(*(caller(i, b) for i, b in enumerate(budgets)))
    return tokens, requests


def _policy(batcher: Batcher, hold: bool) -> None:
    if hold:
        vars(batcher).pop("_hold", None)  # the class's method again
    else:
        batcher._hold = lambda: False  # type: ignore[method-assign]


async def _bench(engine: TransformersEngine, args: argparse.Namespace) -> None:
    batcher = engine._batcher
    assert batcher is not None
    think = args.think_ms / 1e3
    sets = {f"{args.short} tokens": [args.short] * args.clients}
    sets["2-64 mixed"] = [MIXED[i % len(MIXED)] for i in range(args.clients)]
    for name, budgets in sets.items():
        rates: dict[bool, list[tuple[float, float, float]]] = {True: [], False: []}
        for r in range(args.rounds):
            for hold in (True, False) if r % 2 == 0 else (False, True):
                _policy(batcher, hold)
                await _load(engine, budgets, 1.0, think)  # the batch settles under this policy
                before = engine.stats()
                tokens, requests = await _load(engine, budgets, args.seconds, think)
                after = engine.stats()
                prefills = after.prefills - before.prefills
                rows = (after.requests_finished - before.requests_finished) / max(prefills, 1)
                rates[hold].append((tokens / args.seconds, requests / args.seconds, rows))
                print(
                    f"{name:>11} {'held' if hold else 'every step':>10}: "
                    f"{tokens / args.seconds:7.0f} tok/s {requests / args.seconds:6.0f} req/s "
                    f"{rows:5.1f} rows per prefill",
                    flush=True,
                )
        held, every = (statistics.fmean(x[0] for x in rates[h]) for h in (True, False))
        ratios = [h[0] / e[0] for h, e in zip(rates[True], rates[False], strict=True)]
        print(
            f"{name}: {held:.0f} vs {every:.0f} tok/s, held / every step "
            f"{held / every:.3f} (rounds {min(ratios):.3f}-{max(ratios):.3f})\n",
            flush=True,
        )
    _policy(batcher, True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64, help="callers, each one at a time")
    parser.add_argument("--max-batch", type=int, default=16, help="rows of the batch")
    parser.add_argument("--short", type=int, default=4, help="tokens per short request")
    parser.add_argument("--think-ms", type=float, default=2, help="most pause between requests")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per policy and set")
    parser.add_argument("--seconds", type=float, default=6, help="seconds per round")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    options = {"max_batch": args.max_batch, "n_threads": args.threads}
    engine = load(tiny_chat_dir(), model_name="bench", device="cpu", options=options)
    print(f"{args.clients} callers, {args.max_batch} rows, {args.threads} torch thread(s)")
    try:
        asyncio.run(_bench(engine, args))
    finally:
        asyncio.run(engine.close())


if __name__ == "__main__":
    main()
