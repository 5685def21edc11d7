"""Metering exactness under load: every request gets exactly one usage record, and token
sums equal what the engine reports.

2,000 requests at concurrency 64 through the gateway (auth on, a tenant key), half
streamed, 10% of them aborted by the client after a few events. Afterwards the usage
records of the tenant are compared with the worker's own counters
(``GET /zhisuan/stats`` on the worker: prompt and completion tokens it processed).

Run: ``.venv/bin/python benchmarks/bench_metering.py [--requests 2000]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from _harness import CHAT, start_metered


async def run(base: str, key: str, n: int, concurrency: int, abort_share: float) -> dict[str, int]:
    rng = random.Random(7)
    plan = []
    for i in range(n):
        abort = rng.random() < abort_share
        plan.append((abort or i % 2 == 0, abort, rng.randint(4, 24)))
    counts = {"ok": 0, "aborted": 0, "failed": 0}
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=120) as http:

        async def one(stream: bool, abort: bool, max_tokens: int) -> None:
            body: dict[str, Any] = {
                "model": CHAT,
                "messages": [{"role": "user", "content": f"Tell me about GPUs #{max_tokens}"}],
                "max_tokens": max_tokens if not abort else 200,
                "stream": stream,
            }
            if abort:
                body["ignore_eos"] = True
            async with sem:
                url = f"{base}/v1/chat/completions"
                if not stream:
                    resp = await http.post(url, json=body)
                    counts["ok" if resp.status_code == 200 else "failed"] += 1
                    return
                async with http.stream("POST", url, json=body) as resp:
                    events = 0
                    async for line in resp.aiter_lines():
                        events += line.startswith("data: ")
                        if abort and events >= 3:
                            counts["aborted"] += 1
                            return
                    counts["ok" if resp.status_code == 200 else "failed"] += 1

        await asyncio.gather(*(one(*p) for p in plan))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--aborts", type=float, default=0.10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        srv, key, direct = start_metered(Path(tmp) / "home", "--max-batch", "64")
        try:
            before = httpx.get(f"{direct}/zhisuan/stats").json()
            start = time.perf_counter()
            counts = asyncio.run(run(srv.url, key, args.requests, args.concurrency, args.aborts))
            wall = time.perf_counter() - start
            time.sleep(1.0)
            deadline = time.monotonic() + 30
            while True:  # aborted requests are settled once the worker reports its count
                rows = json.loads(srv.cli("usage", "--json", "--tenant", "bench").stdout)
                if len(rows) >= args.requests or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            after = httpx.get(f"{direct}/zhisuan/stats").json()
        finally:
            srv.stop()
    engine_prompt = after["prompt_tokens"] - before["prompt_tokens"]
    engine_completion = after["completion_tokens"] - before["completion_tokens"]
    rec_prompt = sum(r["prompt_tokens"] for r in rows)
    rec_completion = sum(r["completion_tokens"] for r in rows)
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    print(f"{args.requests} requests at concurrency {args.concurrency} in {wall:.1f} s")
    print(f"client side: {counts}")
    print(f"usage records by status: {statuses}")
    print()
    print("| measure | usage records | engine | equal |")
    print("|---|---|---|---|")
    print(
        f"| requests | {len(rows)} | {after['generations'] - before['generations']} | "
        f"{len(rows) == args.requests} |"
    )
    print(f"| prompt tokens | {rec_prompt} | {engine_prompt} | {rec_prompt == engine_prompt} |")
    print(
        f"| completion tokens | {rec_completion} | {engine_completion} | "
        f"{rec_completion == engine_completion} |"
    )
    print(
        f"| client aborts recorded | {statuses.get('client_abort', 0)} | "
        f"{counts['aborted']} (client) | {statuses.get('client_abort', 0) == counts['aborted']} |"
    )


if __name__ == "__main__":
    main()
