"""Gateway overhead: the same requests to a worker directly and through the gateway.

The gateway path is the full one: auth (tenant key), quota reservation, routing, relay,
metering (a durable usage record per request) and metrics. Both paths hit the same worker
in one run, interleaved in rounds so drift in machine load hits both alike.

Targets (issue 3): added p50 <= 2 ms, added p99 <= 10 ms, throughput >= 95% of direct, at
concurrency 1 and 64, streaming and not.

On a small CPU-only host the gateway, a CPU engine and the load generator compete for the
same cores, so every millisecond of gateway CPU is taken from the engine. ``zhisuan
serve`` keeps a core for the gateway and pins CPU replicas to the others
(``zhisuan.cluster.cores``); run with ``ZHISUAN_CPU_PINNING=off`` to compare.
``--engine-threads`` overrides the engine's thread count.

The load generator is aiohttp on uvloop. An httpx client at concurrency 64 took a whole
core on two cores (about 10 ms of CPU per request), as much as the engine, and the
ratios then measured the client's contention rather than the gateway. It runs on the
gateway's cores (``--client-cores gateway``, the default when the gateway is pinned), as
clients on other machines would leave the engine's cores to the engine: left anywhere,
the scheduler puts it next to the engine in some rounds and not in others, and the
rounds at 64 then differ by the client's share of the engine's core. ``--client-cores
any`` leaves it to the scheduler.

At concurrency 1 each request goes to each path in turn, and the throughput ratio (mean
latency over mean latency) comes with a 95% confidence interval from the paired
differences: on a shared VM the tail of either path moves the means, and 400 pairs left
about ±1% of doubt, hence 2,000 by default. At 64, each round keeps 64 requests in flight
for ``--seconds`` and counts the requests that end in that window, so the ramp-up and the
drain stay out of the throughput; rounds alternate between paths, and the table shows the
lowest and highest round's ratio besides the overall one.

Run: ``.venv/bin/python benchmarks/bench_gateway_overhead.py [--max-tokens 64]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import uvloop

from _harness import CHAT, start_metered

BODY: dict[str, Any] = {
    "model": CHAT,
    "messages": [{"role": "user", "content": "Hi"}],
    "max_tokens": 4,
    "temperature": 0,
}


ERRORS: dict[str, int] = {}


async def one(http: aiohttp.ClientSession, url: str, stream: bool) -> float | None:
    """Seconds for one request, or None if it failed (counted in ``ERRORS``)."""
    start = time.perf_counter()
    try:
        async with http.post(url, json={**BODY, "stream": stream}) as resp:
            async for _ in resp.content.iter_any():  # every event as it comes
                pass
    except (aiohttp.ClientError, TimeoutError) as exc:
        key = f"{url.split('/v1')[0]} {type(exc).__name__}"
        ERRORS[key] = ERRORS.get(key, 0) + 1
        return None
    if resp.status != 200:
        key = f"{url.split('/v1')[0]} HTTP {resp.status}"
        ERRORS[key] = ERRORS.get(key, 0) + 1
        return None
    return time.perf_counter() - start


def session(key: str | None, concurrency: int) -> aiohttp.ClientSession:
    """A client with ``concurrency`` pooled connections and the key, if any."""
    return aiohttp.ClientSession(
        headers={"Authorization": f"Bearer {key}"} if key else {},
        connector=aiohttp.TCPConnector(limit=concurrency),
        timeout=aiohttp.ClientTimeout(total=120),
    )


async def steady(
    base: str, key: str | None, stream: bool, concurrency: int, seconds: float, warmup: float
) -> list[float]:
    """``concurrency`` clients, each sending its next request when the last one ends.

    Returns:
        Latencies of the requests that ended in the ``seconds`` after ``warmup``: the
        ramp-up and the drain (when fewer than ``concurrency`` requests are left), which a
        fixed count of requests would include, stay out of the throughput.
    """
    async with session(key, concurrency) as http:
        url = f"{base}/v1/chat/completions"
        await one(http, url, stream)  # warm the connection
        begin = time.perf_counter() + warmup
        end = begin + seconds
        lat: list[float] = []

        async def client() -> None:
            while time.perf_counter() < end:
                x = await one(http, url, stream)
                if x is not None and begin <= time.perf_counter() <= end:
                    lat.append(x)

        await asyncio.gather(*(client() for _ in range(concurrency)))
        return lat


async def alternate(
    paths: list[tuple[str, str | None]], stream: bool, n: int
) -> dict[str, list[float]]:
    """Concurrency 1, one request to each path in turn, so drift hits both alike.

    Returns:
        Latencies per path, paired by index (a pair with a failed request is left out).
    """
    clients = [session(k, 1) for _, k in paths]
    lat: dict[str, list[float]] = {base: [] for base, _ in paths}
    try:
        for http, (base, _) in zip(clients, paths, strict=True):
            for _ in range(5):  # warm up
                await one(http, f"{base}/v1/chat/completions", stream)
        for _ in range(n):
            pair = [
                await one(http, f"{base}/v1/chat/completions", stream)
                for http, (base, _) in zip(clients, paths, strict=True)
            ]
            got = [x for x in pair if x is not None]
            if len(got) == len(pair):
                for (base, _), x in zip(paths, got, strict=True):
                    lat[base].append(x)
    finally:
        for http in clients:
            await http.close()
    return lat


def pct(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[int(q) - 1]


def paired_ratio(direct: list[float], gateway: list[float]) -> tuple[float, float, float]:
    """Throughput through the gateway over direct at concurrency 1 (mean latency over mean
    latency), and its 95% confidence interval from the paired differences."""
    d = statistics.fmean(direct)
    diffs = [g - x for g, x in zip(gateway, direct, strict=True)]
    mean, half = statistics.fmean(diffs), 1.96 * statistics.stdev(diffs) / len(diffs) ** 0.5
    return d / (d + mean), d / (d + mean + half), d / (d + mean - half)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n1", type=int, default=2000, help="requests per path at concurrency 1")
    parser.add_argument("--seconds", type=float, default=15, help="seconds per round at 64")
    parser.add_argument("--warmup", type=float, default=3, help="unmeasured seconds first")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per path at concurrency 64")
    parser.add_argument(
        "--max-tokens", type=int, default=4, help="tokens generated per request (ignore_eos)"
    )
    parser.add_argument(
        "--client-cores",
        choices=["gateway", "any"],
        default="gateway",
        help="where the load generator runs: on the gateway's cores, or anywhere",
    )
    parser.add_argument(
        "--engine-threads",
        type=int,
        default=None,
        help="CPU threads of the worker (default: every core but one)",
    )
    args = parser.parse_args()
    BODY["max_tokens"] = args.max_tokens
    BODY["ignore_eos"] = True
    flags = ["--max-batch", "64"]
    if args.engine_threads:
        flags += ["--threads", str(args.engine_threads)]
    with tempfile.TemporaryDirectory() as tmp:
        srv, key, direct = start_metered(Path(tmp) / "home", *flags)
        try:
            gateway_proc = psutil.Process(srv.proc.pid)
            gateway_cores = gateway_proc.cpu_affinity() or []
            if args.client_cores == "gateway" and len(gateway_cores) < (os.cpu_count() or 1):
                os.sched_setaffinity(0, gateway_cores)
            print(f"load generator on cores {sorted(os.sched_getaffinity(0))}", flush=True)
            rows = []
            for stream in (False, True):
                for conc in (1, 64):
                    lat: dict[str, list[float]] = {"direct": [], "gateway": []}
                    wall: dict[str, float] = {"direct": 0.0, "gateway": 0.0}
                    counts: dict[str, list[int]] = {"direct": [], "gateway": []}
                    before = sum(gateway_proc.cpu_times()[:2])
                    if conc == 1:
                        both = uvloop.run(
                            alternate([(direct, None), (srv.url, key)], stream, args.n1)
                        )
                        lat = {"direct": both[direct], "gateway": both[srv.url]}
                        wall = {path: sum(xs) for path, xs in lat.items()}
                    else:
                        for _ in range(args.rounds):
                            for path, base, k in (
                                ("direct", direct, None),
                                ("gateway", srv.url, key),
                            ):
                                done = uvloop.run(
                                    steady(base, k, stream, conc, args.seconds, args.warmup)
                                )
                                lat[path] += done
                                counts[path].append(len(done))
                                wall[path] += args.seconds
                    cpu = sum(gateway_proc.cpu_times()[:2]) - before
                    per_request = cpu / max(len(lat["gateway"]), 1)
                    rows.append((stream, conc, lat, wall, counts, per_request))
                    d, g = lat["direct"], lat["gateway"]
                    print(
                        f"{'stream' if stream else 'json  '} c={conc:<3} "
                        f"direct p50 {pct(d, 50) * 1e3:7.2f} ms p99 {pct(d, 99) * 1e3:7.2f} | "
                        f"gateway p50 {pct(g, 50) * 1e3:7.2f} ms p99 {pct(g, 99) * 1e3:7.2f}",
                        flush=True,
                    )
        finally:
            srv.stop()
    print(f"\nworker threads: {args.engine_threads or 'default'}, {args.max_tokens} tokens")
    print(
        "| mode | concurrency | added p50 (ms) | added p99 (ms) | throughput vs direct "
        "| spread | gateway CPU per request (ms) |"
    )
    print("|---|---|---|---|---|---|---|")
    for stream, conc, lat, wall, counts, cpu_per_request in rows:
        d, g = lat["direct"], lat["gateway"]
        if conc == 1:  # the spread: a 95% confidence interval
            ratio, low, high = paired_ratio(d, g)
        else:  # the spread: the lowest and highest of the rounds
            ratio = (len(g) / wall["gateway"]) / (len(d) / wall["direct"])
            per_round = [x / y for x, y in zip(counts["gateway"], counts["direct"], strict=True)]
            low, high = min(per_round), max(per_round)
        print(
            f"| {'stream' if stream else 'non-stream'} | {conc} | "
            f"{(pct(g, 50) - pct(d, 50)) * 1e3:.2f} | {(pct(g, 99) - pct(d, 99)) * 1e3:.2f} | "
            f"{ratio:.1%} | {low:.1%}–{high:.1%} | {cpu_per_request * 1e3:.2f} |"
        )
    print("spread: 95% confidence interval at concurrency 1, lowest–highest round at 64")
    print(f"failed requests: {ERRORS or 'none'}")
    print("\ntargets: added p50 <= 2 ms, added p99 <= 10 ms, throughput >= 95% of direct")


if __name__ == "__main__":
    main()
