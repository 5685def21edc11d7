"""Sharing a replica: one tenant's short requests while another keeps a backlog queued.

Two deployments of the demo chat model on one gateway, the same but for the order of the
requests waiting for the engine: ``--queue fair`` (the tenants take turns, the default)
and ``--queue fifo`` (arrival order). On each in turn, tenant ``bulk`` keeps ``--backlog``
requests of ``--bulk-tokens`` in flight, more than the replica's ``--max-batch``, so some
always wait; tenant ``chat`` sends one request of ``--chat-tokens`` at a time. Rounds
alternate fair-fifo, fifo-fair, ... so drift in the machine's speed hits both alike.

Printed per deployment: the chat tenant's latency (p50, p95) under the backlog and alone
(the first round, before any backlog), the bulk tenant's completion tokens per second, and
both tenants' together: taking turns gives the chat tenant its share sooner (so more of
the engine's tokens are its), and must not cost the engine throughput.

Run: ``.venv/bin/python benchmarks/bench_fairness.py [--rounds 3] [--seconds 8]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from _harness import ADMIN, Server, demo_path, start_server, tenant

FAIR, FIFO = "fair-chat", "fifo-chat"


def setup(home: Path, max_batch: int) -> tuple[Server, dict[str, str]]:
    srv = start_server(home, "--auth", "on", env={"ZHISUAN_ADMIN_KEY": ADMIN})
    srv.wait_ready(timeout=60)
    path = demo_path()
    for name, order in ((FAIR, "fair"), (FIFO, "fifo")):
        srv.cli("models", "import", path, "--name", name)
        srv.cli("deploy", name, "--max-batch", str(max_batch), "--queue", order)
    keys = {name: tenant(srv, name) for name in ("bulk", "chat")}
    srv.wait_ready(timeout=120)
    return srv, keys


async def ask(http: httpx.AsyncClient, url: str, key: str, model: str, tokens: int) -> int:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "Tell me about sharing a GPU."}],
        "max_tokens": tokens,
        "ignore_eos": True,
    }
    resp = await http.post(url, json=body, headers={"Authorization": f"Bearer {key}"})
    resp.raise_for_status()
    return int(resp.json()["usage"]["completion_tokens"])


async def round_(
    base: str, keys: dict[str, str], model: str, args: argparse.Namespace, backlog: int
) -> tuple[list[float], float, float]:
    """The chat tenant's latencies (s), the bulk tenant's tokens per second, and both
    tenants' tokens per second."""
    url = f"{base}/v1/chat/completions"
    limits = httpx.Limits(max_connections=backlog + 2, max_keepalive_connections=backlog + 2)
    async with httpx.AsyncClient(timeout=300, limits=limits) as http:
        end = time.perf_counter() + args.seconds
        bulk_tokens = 0

        async def bulk() -> None:
            nonlocal bulk_tokens
            while time.perf_counter() < end:
                tokens = await ask(http, url, keys["bulk"], model, args.bulk_tokens)
                bulk_tokens += tokens  # not ``+= await``: that reads the sum before waiting

        workers = [asyncio.create_task(bulk()) for _ in range(backlog)]
        await asyncio.sleep(1.0 if backlog else 0)  # the backlog builds up first
        latencies, chat_tokens = [], 0
        while time.perf_counter() < end:
            start = time.perf_counter()
            chat_tokens += await ask(http, url, keys["chat"], model, args.chat_tokens)
            latencies.append(time.perf_counter() - start)
        began = end - args.seconds
        await asyncio.gather(*workers)
        elapsed = time.perf_counter() - began
        return latencies, bulk_tokens / elapsed, (bulk_tokens + chat_tokens) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="rounds per deployment")
    parser.add_argument("--seconds", type=float, default=8, help="seconds per round")
    parser.add_argument("--max-batch", type=int, default=8, help="sequences per replica")
    parser.add_argument("--backlog", type=int, default=32, help="bulk requests in flight")
    parser.add_argument("--bulk-tokens", type=int, default=64)
    parser.add_argument("--chat-tokens", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        srv, keys = setup(Path(tmp) / "home", args.max_batch)
        try:
            alone = {m: asyncio.run(round_(srv.url, keys, m, args, 0))[0] for m in (FAIR, FIFO)}
            chat: dict[str, list[float]] = {FAIR: [], FIFO: []}
            bulk: dict[str, list[float]] = {FAIR: [], FIFO: []}
            both: dict[str, list[float]] = {FAIR: [], FIFO: []}
            for r in range(args.rounds * 2):
                model = (FAIR, FIFO)[(r + r // 2) % 2]  # fair, fifo, fifo, fair, ...
                lat, rate, total = asyncio.run(round_(srv.url, keys, model, args, args.backlog))
                chat[model] += lat
                bulk[model].append(rate)
                both[model].append(total)
                print(f"round {r}: {model}: chat p50 {pct(lat, 50):.0f} ms, bulk {rate:.0f} tok/s")
        finally:
            srv.stop()
    print(
        f"\n{args.backlog} bulk requests of {args.bulk_tokens} tokens in flight, max batch "
        f"{args.max_batch}; chat requests of {args.chat_tokens} tokens, one at a time"
    )
    print("| queue | chat p50 | chat p95 | chat p50 alone | bulk tok/s | both tok/s |")
    print("|---|---|---|---|---|---|")
    for model in (FAIR, FIFO):
        print(
            f"| {model.split('-')[0]} | {pct(chat[model], 50):.0f} ms | "
            f"{pct(chat[model], 95):.0f} ms | {pct(alone[model], 50):.0f} ms | "
            f"{statistics.fmean(bulk[model]):.0f} | {statistics.fmean(both[model]):.0f} |"
        )
    ratio = {
        name: statistics.fmean(v[FAIR]) / statistics.fmean(v[FIFO])
        for name, v in (("bulk", bulk), ("both", both))
    }
    print(
        f"chat p50 fifo / fair: {pct(chat[FIFO], 50) / pct(chat[FAIR], 50):.1f}x; "
        f"throughput fair / fifo: bulk {ratio['bulk']:.3f}, both {ratio['both']:.3f}"
    )


def pct(values: list[float], q: int) -> float:
    """The ``q``-th percentile of ``values`` (seconds), in ms."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] * 1e3


if __name__ == "__main__":
    main()
