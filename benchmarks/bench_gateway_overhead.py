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

The load generator is the benchmark's own: ``_loadgen.c``, built with the host's C compiler
on first use (``_native.py``; ``--client native``, the default), or ``_load.Client`` in
Python on uvloop (``--client python``, and where there is no C compiler). Each writes a
prepared request on a keep-alive connection and times the answer to its last byte. The
Python one takes about 0.04-0.05 ms of CPU per request at 64 (0.08-0.10 ms a stream), the
native one 0.02-0.03 ms (0.06-0.07 ms a stream); aiohttp took 0.2 ms, and at 64 the direct
path then ran 10-15% slower than with the Python client (the client, not the worker, set
its pace). An httpx client took about 10 ms per request. The load generator runs on the
gateway's cores (``--client-cores gateway``, the default when the gateway is pinned), as
clients on other machines would leave the engine's cores to the engine: left anywhere, the
scheduler puts it next to the engine in some rounds and not in others, and the rounds at 64
then differ by the client's share of the engine's core. ``--client-cores any`` leaves it to
the scheduler, and ``--client-cores engine`` puts it on the engine's cores, where at 64 it
slows both paths alike instead of taking turns with the gateway. On a host this small it
shares a core either way: at 64, the gateway's work on a burst of answers (the engine ends
a batch's fixed-length requests together) and the client's work on the same burst take
turns on one core, and the client's CPU is time the gateway's answers wait for, which
clients on other machines would not take. Side by side on one server, the added p50 at 64
was 0.8 / 0.9 ms with the native client and 1.9 / 2.9 ms with the Python one (non-stream /
streaming), and 0.03 ms between two direct paths (``docs/gateway-overhead.md``).

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
It comes from clients that alternate instead (``--mixed`` seconds, in ``--window``
windows): 128 clients, each sending its requests to the two paths in turn, so 64 are on
each path at a time, both paths see the same engine, batches and machine, and a client's
place in the engine's batches is shared by both paths. (Two groups of 64 side by side,
one per path, locked into batches of their own, and the groups' places, not the gateway,
moved their difference by ±10 ms from one round to the next.) ``--null`` checks the method:
alternating between two identical direct paths, it found −0.05 (−0.1 to 0.1) ms at the
p50 and −0.33 (−0.8 to 0.2) ms at the p99 without streaming, 0.12 (−0.2 to 0.5) and
−0.05 (−0.2 to 0.1) ms streaming. The alternating clients run ``--starts`` times
(``--mixed`` seconds in all), each time from an idle engine: with more requests than rows,
the engine's batch keeps the grouping its first arrivals gave it for as long as the load
lasts, one group of 64 rows that all end together or two or three that take turns, and
one group left the gateway a burst of 64 answers to relay at once (about 3 ms at the p50
against 0.5-2.4 ms). A single run drew one grouping, and the grouping, not the gateway,
decided whether it met the p50 target; several starts sample them, and each start prints
its added p50 and how many requests joined the batch per prefill pass (the worker's
``/health``). Within a start, a window's added p50 and p99 are its percentiles' differences;
the figure at 64 is the mean over starts of their windows' mean, with a 95% confidence
interval from the starts (the windows of one start share its grouping, so they are not
independent replicates). They are given twice: of the
latency itself, and of the latency less the worker's own time on the request (its
``server-timing``), which leaves out where a request fell in the engine's batches but not
how the worker's event loop treated it. ``--control`` runs the method against a minimal
relay (``_relay.py``, 0.08 ms of CPU per request): the relay against the worker directly
shows what the method attributes to a hop that does almost nothing, and the gateway
against the relay the gateway's own work beyond such a hop. At 1 it sends each request to
the worker, the relay and the gateway in turn: what a hop costs at 1 moves with the
machine's load from run to run (the gateway added 0.13 to 0.44 ms on the same code across
a day on this host), and the relay's figure taken at the same moment tells the machine's
part from the gateway's.

At 1 the throughput ratio is a direct request's mean latency over the gateway's, so the
throughput target leaves the gateway 5.3% of a direct request (printed at the end): 0.3 ms
of a 4-token request of the demo model (about 5.7 ms, the default), against the p50
target's 2 ms. The two targets agree for a request of about 38 ms (48 tokens of the demo
model took 51-62 ms here); below that the throughput at 1 is the stricter, and with the
default it is about seven times the p50's.

Run: ``.venv/bin/python benchmarks/bench_gateway_overhead.py [--max-tokens 48]``
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import statistics
import tempfile
import time
from pathlib import Path

import psutil
import uvloop

import _native
from _alternating import (
    BODY,
    ERRORS,
    Alternate,
    Mixed,
    Start,
    added_across,
    added_in,
    clients,
    control,
    in_python,
    in_turn,
    mean_ci,
    null_check,
    one,
    paired_ratio,
    pct,
    starts,
)
from _harness import start_metered
from _load import Client

THROUGHPUT = 0.95
"""The throughput target: this share of direct's, at least."""
BUDGET = 1 / THROUGHPUT - 1
"""What the throughput target at 1 leaves the gateway, as a share of a direct request."""


async def steady(
    base: str, key: str | None, stream: bool, concurrency: int, seconds: float, warmup: float
) -> list[float]:
    """``concurrency`` clients, each sending its next request when the last one ends.

    Returns:
        Latencies of the requests that ended in the ``seconds`` after ``warmup``: the
        ramp-up and the drain (when fewer than ``concurrency`` requests are left), which a
        fixed count of requests would include, stay out of the throughput.
    """
    pool = clients(base, key, stream, concurrency)
    await one(pool[0])  # the first answer after a pause is slow on either path
    begin = time.perf_counter() + warmup
    end = begin + seconds
    lat: list[float] = []

    async def client(c: Client) -> None:
        while time.perf_counter() < end:
            x = await one(c)
            if x is not None and begin <= time.perf_counter() <= end:
                lat.append(x)

    try:
        await asyncio.gather(*(client(c) for c in pool))
    finally:
        for c in pool:
            c.close()
    return lat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n1", type=int, default=2000, help="requests per path at concurrency 1")
    parser.add_argument("--seconds", type=float, default=6, help="seconds per round at 64")
    parser.add_argument("--warmup", type=float, default=1.5, help="unmeasured seconds first")
    parser.add_argument("--rounds", type=int, default=10, help="rounds per path at concurrency 64")
    parser.add_argument(
        "--mixed",
        type=float,
        default=60,
        help="seconds of clients alternating between the paths, for the latency at 64",
    )
    parser.add_argument(
        "--starts",
        type=int,
        default=6,
        help="the alternating clients' seconds split into this many runs, each from an idle "
        "engine (each run keeps one grouping of the engine's batch)",
    )
    parser.add_argument(
        "--window", type=float, default=3, help="seconds per window of the alternating clients"
    )
    parser.add_argument(
        "--null",
        action="store_true",
        help="check the method: alternate between two direct paths at 64 (expect 0 added)",
    )
    parser.add_argument(
        "--control",
        action="store_true",
        help="against a minimal relay (_relay.py): at 1, direct, relay and gateway in turn; "
        "at 64, relay vs direct and gateway vs relay",
    )
    parser.add_argument(
        "--max-tokens", type=int, default=4, help="tokens generated per request (ignore_eos)"
    )
    parser.add_argument(
        "--client-cores",
        choices=["gateway", "engine", "any"],
        default="gateway",
        help="where the load generator runs: on the gateway's cores, or anywhere",
    )
    parser.add_argument(
        "--client",
        choices=["native", "python"],
        default="native",
        help="the load generator: native (_loadgen.c, built with the host's C compiler; "
        "python where there is none) or python (_load.Client)",
    )
    parser.add_argument(
        "--client-policy",
        choices=["other", "batch"],
        default="other",
        help="the load generator's scheduling policy: batch (SCHED_BATCH) never preempts the "
        "gateway when an answer wakes it, as clients on other machines never take its core",
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        default=64,
        help="rows of the worker's batch (64: every request at 64 runs at once; the "
        "deployments' default, 16, leaves the rest waiting in the worker's queue)",
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
    flags = ["--max-batch", str(args.max_batch)]
    if args.engine_threads:
        flags += ["--threads", str(args.engine_threads)]
    exe = _native.build() if args.client == "native" else None
    if args.client == "native" and exe is None:
        print("so the load generator is the Python one")
    load: Mixed = in_python if exe is None else functools.partial(_native.mixed, exe)
    pairs: Alternate = in_turn if exe is None else functools.partial(_native.alternate, exe)
    with tempfile.TemporaryDirectory() as tmp:
        srv, key, direct = start_metered(Path(tmp) / "home", *flags)
        try:
            gateway_proc = psutil.Process(srv.proc.pid)
            gateway_cores = gateway_proc.cpu_affinity() or []
            pinned = len(gateway_cores) < (os.cpu_count() or 1)
            if args.client_cores == "gateway" and pinned:
                os.sched_setaffinity(0, gateway_cores)
            elif args.client_cores == "engine" and pinned:
                os.sched_setaffinity(0, set(range(os.cpu_count() or 1)) - set(gateway_cores))
            if args.client_policy == "batch":
                os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
            print(
                f"load generator {'python' if exe is None else 'native'}, on cores "
                f"{sorted(os.sched_getaffinity(0))}, policy {args.client_policy}",
                flush=True,
            )
            if args.null:
                null_check(direct, args, load)
                return
            if args.control:
                control(direct, srv.url, key, gateway_cores if pinned else [], args, load, pairs)
                return
            rows = []
            for stream in (False, True):
                for conc in (1, 64):
                    lat: dict[str, list[float]] = {"direct": [], "gateway": []}
                    wall: dict[str, float] = {"direct": 0.0, "gateway": 0.0}
                    rounds: dict[str, list[list[float]]] = {"direct": [], "gateway": []}
                    runs: list[Start] = []
                    before = sum(gateway_proc.cpu_times()[:2])
                    if conc == 1:
                        got = pairs([(direct, None), (srv.url, key)], stream, args.n1)
                        lat = {"direct": got[direct], "gateway": got[srv.url]}
                        wall = {path: sum(xs) for path, xs in lat.items()}
                    else:
                        pair = [("direct", direct, None), ("gateway", srv.url, key)]
                        for r in range(args.rounds):
                            for path, base, k in pair if r % 2 == 0 else pair[::-1]:
                                done = (
                                    uvloop.run(
                                        steady(base, k, stream, conc, args.seconds, args.warmup)
                                    )
                                    if exe is None
                                    else _native.steady(
                                        exe, base, k, stream, conc, args.seconds, args.warmup
                                    )
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
                        runs = starts(
                            paths,
                            stream,
                            conc,
                            args.mixed,
                            args.starts,
                            args.warmup,
                            args.window,
                            load,
                        )
                        windows = [w for run, _ in runs for w in run]
                        _show(
                            f"{mode} c={conc}+{conc} alternating",
                            [x for d_w, _ in windows for x, _ in d_w],
                            [x for _, g_w in windows for x, _ in g_w],
                        )
                        for i, (run, joined) in enumerate(runs):
                            group = "?" if joined is None else f"{joined:.1f}"
                            print(
                                f"  start {i + 1}: added p50 {added_in(run)[0]} ms less the "
                                f"worker's time; {group} requests per prefill",
                                flush=True,
                            )
                    rows.append((stream, conc, lat, wall, rounds, runs, per_request))
        finally:
            srv.stop()
    print(
        f"\nworker threads: {args.engine_threads or 'default'}, {args.max_tokens} tokens, "
        f"a batch of {args.max_batch}"
    )
    print(
        "| mode | concurrency | added p50 (ms) | added p99 (ms) | throughput vs direct "
        "| gateway CPU per request (ms) | latency difference p50 / p99 (ms) |"
    )
    print("|---|---|---|---|---|---|---|")
    for stream, conc, lat, wall, rounds, runs, cpu_per_request in rows:
        d, g = lat["direct"], lat["gateway"]
        if conc == 1:
            ratio, low, high = paired_ratio(d, g)
            added = [f"{(pct(g, q) - pct(d, q)) * 1e3:.2f}" for q in (50, 99)]
            plain = added
        else:
            ratio = (len(g) / wall["gateway"]) / (len(d) / wall["direct"])
            both = zip(rounds["direct"], rounds["gateway"], strict=True)
            _, low, high = mean_ci([len(y) / len(x) for x, y in both])
            added = added_across(runs)
            plain = added_across(runs, own=False)
        print(
            f"| {'stream' if stream else 'non-stream'} | {conc} | {added[0]} | {added[1]} | "
            f"{ratio:.2%} ({low:.1%}–{high:.1%}) | {cpu_per_request * 1e3:.2f} | "
            f"{plain[0]} / {plain[1]} |"
        )
    print(
        "in brackets: 95% confidence intervals (at 1 from the paired requests; at 64 the"
        " latency from the runs of alternating clients, each from an idle engine, the"
        " throughput from the paired rounds). At 64 the added latency is that of the"
        " latency less the worker's own time (its server-timing); the last column is of"
        " the latency itself."
    )
    print(f"failed requests: {ERRORS or 'none'}")
    print(
        "\ntargets: added p50 <= 2 ms, added p99 <= 10 ms, "
        f"throughput >= {THROUGHPUT:.0%} of direct"
    )
    for stream, conc, lat, *_ in rows:
        if conc == 1:
            request = statistics.fmean(lat["direct"])
            print(
                f"at 1, {'streaming' if stream else 'non-stream'}: a direct request takes "
                f"{request * 1e3:.1f} ms on average, so the throughput target leaves the "
                f"gateway {request * BUDGET * 1e3:.2f} ms of it (the p50 target, 2 ms)"
            )


def _show(label: str, d: list[float], g: list[float]) -> None:
    print(
        f"{label:<14} direct p50 {pct(d, 50) * 1e3:7.2f} ms p99 {pct(d, 99) * 1e3:7.2f} | "
        f"gateway p50 {pct(g, 50) * 1e3:7.2f} ms p99 {pct(g, 99) * 1e3:7.2f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
