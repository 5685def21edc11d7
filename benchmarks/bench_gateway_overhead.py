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
drain stay out of the throughput. Rounds come in pairs, one per path, in the order
direct-gateway, gateway-direct, ... (so a steady drift in the machine's speed hits both
alike), and the throughput ratio at 64 comes with a 95% confidence interval from the
pairs' ratios. The latency at 64 is not taken from those rounds: a round's p50 moved by
10 ms or more from one to the next on either path (how the 64 requests fall into the
engine's batches differs), so paired rounds could not tell a 2 ms overhead from noise.
It comes from rounds side by side instead (``--side-by-side``, 5 by default): 64 clients
through the gateway and 64 straight to the worker at the same time, so both see the same
engine, the same batches and the same machine, and what differs is the gateway. The
added p50 and p99 at 64 are the mean of those rounds' differences, with a 95% confidence
interval from them. (A bootstrap over the requests of all rounds gave intervals a few ms
wide that the next run's figures fell far outside: latencies at 64 cluster on the
engine's batch steps and rounds differ as wholes, so the rounds are the replicates.)

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


async def side_by_side(
    paths: list[tuple[str, str | None]],
    stream: bool,
    concurrency: int,
    seconds: float,
    warmup: float,
) -> list[list[float]]:
    """``concurrency`` clients on each path at once; latencies per path as :func:`steady`."""
    return list(
        await asyncio.gather(
            *(steady(base, k, stream, concurrency, seconds, warmup) for base, k in paths)
        )
    )


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


_T975 = (12.71, 4.30, 3.18, 2.78, 2.57, 2.45, 2.36, 2.31, 2.26, 2.23, 2.20, 2.18, 2.16, 2.14)
"""Student's t, 97.5th percentile, for 1..14 degrees of freedom (then 2.1 down to 1.96)."""


def mean_ci(xs: list[float]) -> tuple[float, float, float]:
    """Mean of ``xs`` and its 95% confidence interval (Student's t)."""
    mean = statistics.fmean(xs)
    if len(xs) < 2:
        return mean, mean, mean
    df = len(xs) - 1
    t = _T975[df - 1] if df <= len(_T975) else (2.1 if df < 30 else 1.96)
    half = t * statistics.stdev(xs) / len(xs) ** 0.5
    return mean, mean - half, mean + half


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
    parser.add_argument("--seconds", type=float, default=6, help="seconds per round at 64")
    parser.add_argument("--warmup", type=float, default=1.5, help="unmeasured seconds first")
    parser.add_argument("--rounds", type=int, default=10, help="rounds per path at concurrency 64")
    parser.add_argument(
        "--side-by-side", type=int, default=5, help="rounds with both paths at once, at 64"
    )
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
                    rounds: dict[str, list[list[float]]] = {"direct": [], "gateway": []}
                    both: dict[str, list[list[float]]] = {"direct": [], "gateway": []}
                    before = sum(gateway_proc.cpu_times()[:2])
                    if conc == 1:
                        both = uvloop.run(
                            alternate([(direct, None), (srv.url, key)], stream, args.n1)
                        )
                        lat = {"direct": both[direct], "gateway": both[srv.url]}
                        wall = {path: sum(xs) for path, xs in lat.items()}
                    else:
                        pair = [("direct", direct, None), ("gateway", srv.url, key)]
                        for r in range(args.rounds):
                            for path, base, k in pair if r % 2 == 0 else pair[::-1]:
                                done = uvloop.run(
                                    steady(base, k, stream, conc, args.seconds, args.warmup)
                                )
                                lat[path] += done
                                rounds[path].append(done)
                                wall[path] += args.seconds
                    cpu = sum(gateway_proc.cpu_times()[:2]) - before
                    per_request = cpu / max(len(lat["gateway"]), 1)
                    mode = "stream" if stream else "json  "
                    _show(f"{mode} c={conc:<3}", lat["direct"], lat["gateway"])
                    if conc > 1:
                        paths = [(direct, None), (srv.url, key)]
                        for _ in range(args.side_by_side):
                            d_r, g_r = uvloop.run(
                                side_by_side(paths, stream, conc, args.seconds, args.warmup)
                            )
                            both["direct"].append(d_r)
                            both["gateway"].append(g_r)
                        _show(
                            f"{mode} c={conc}+{conc} side by side",
                            [x for r in both["direct"] for x in r],
                            [x for r in both["gateway"] for x in r],
                        )
                    rows.append((stream, conc, lat, wall, rounds, both, per_request))
        finally:
            srv.stop()
    print(f"\nworker threads: {args.engine_threads or 'default'}, {args.max_tokens} tokens")
    print(
        "| mode | concurrency | added p50 (ms) | added p99 (ms) | throughput vs direct "
        "| gateway CPU per request (ms) |"
    )
    print("|---|---|---|---|---|---|")
    for stream, conc, lat, wall, rounds, both, cpu_per_request in rows:
        d, g = lat["direct"], lat["gateway"]
        if conc == 1:
            ratio, low, high = paired_ratio(d, g)
            added = [f"{(pct(g, q) - pct(d, q)) * 1e3:.2f}" for q in (50, 99)]
        else:
            ratio = (len(g) / wall["gateway"]) / (len(d) / wall["direct"])
            pairs = list(zip(rounds["direct"], rounds["gateway"], strict=True))
            _, low, high = mean_ci([len(y) / len(x) for x, y in pairs])
            added = []
            for q in (50, 99):
                side = zip(both["direct"], both["gateway"], strict=True)
                mean, lo, hi = mean_ci([(pct(y, q) - pct(x, q)) * 1e3 for x, y in side])
                added.append(f"{mean:.2f} ({lo:.1f} to {hi:.1f})")
        print(
            f"| {'stream' if stream else 'non-stream'} | {conc} | {added[0]} | {added[1]} | "
            f"{ratio:.1%} ({low:.1%}–{high:.1%}) | {cpu_per_request * 1e3:.2f} |"
        )
    print(
        "in brackets: 95% confidence intervals (at 1 from the paired requests; at 64 the"
        " latency from the rounds side by side, the throughput from the paired rounds)"
    )
    print(f"failed requests: {ERRORS or 'none'}")
    print("\ntargets: added p50 <= 2 ms, added p99 <= 10 ms, throughput >= 95% of direct")


def _show(label: str, d: list[float], g: list[float]) -> None:
    print(
        f"{label:<14} direct p50 {pct(d, 50) * 1e3:7.2f} ms p99 {pct(d, 99) * 1e3:7.2f} | "
        f"gateway p50 {pct(g, 50) * 1e3:7.2f} ms p99 {pct(g, 99) * 1e3:7.2f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
