"""The gateway overhead benchmark's clients, and its method at concurrency 1 and 64.

:func:`alternate` sends one request to each path in turn at concurrency 1. At 64,
:func:`mixed` runs clients that alternate between two paths, so both see the same engine,
batches and machine; :func:`starts` runs it several times, each from an idle engine. A
window's added p50 and p99 (:func:`added_in`) come either from the
latencies or from the latencies less the worker's own time on each request (the
``server-timing`` of its answer), which leaves out where a request fell in the engine's
batches and the worker's queues. :func:`null_check` runs the method at 64 between two
identical direct paths; :func:`control` compares a minimal relay (``_relay.py``) with the
worker and the gateway, at 1 and at 64.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import uvloop

from _harness import CHAT, TENANT
from _load import Client, LoadError
from zhisuan.engines._turns import TENANT_HEADER

BODY: dict[str, Any] = {
    "model": CHAT,
    "messages": [{"role": "user", "content": "Hi"}],
    "max_tokens": 4,
    "temperature": 0,
}


ERRORS: dict[str, int] = {}
"""Failed requests by client address and error."""
Sample = tuple[float, float | None]
"""A request's latency, and its latency less the worker's own time (None: not told)."""
Window = tuple[list[Sample], list[Sample]]
"""The requests of one window of :func:`mixed`, per path."""
Start = tuple[list[Window], float | None]
"""One run of :func:`mixed` from an idle engine: its windows, and how many requests joined
the engine's batch per prefill pass (None: the engine does not say)."""
Mixed = Callable[
    [list[tuple[str, str | None]], bool, int, float, float, float, list[int] | None],
    list[Window],
]
"""A load generator running :func:`mixed`'s method: :func:`in_python`, or the native one
(``_native.mixed``)."""
Alternate = Callable[[list[tuple[str, str | None]], bool, int], dict[str, list[float]]]
"""A load generator running :func:`alternate`'s method: :func:`in_turn`, or the native one
(``_native.alternate``)."""


async def one(client: Client) -> float | None:
    """Seconds for one request, or None if it failed (counted in ``ERRORS``)."""
    try:
        return await client.send()
    except (LoadError, OSError) as exc:
        key = f"{client.host}:{client.port} {exc}"
        ERRORS[key] = ERRORS.get(key, 0) + 1
        return None


def clients(base: str, key: str | None, stream: bool, n: int) -> list[Client]:
    """``n`` clients of one path: the gateway's with ``key``, the worker's without one. A
    request to the worker names the tenant the gateway names for the key, so the paths'
    requests wait in one line of the worker's queue (``zhisuan.engines._turns``); as two
    tenants they would take turns, and a path's latency would depend on the other's."""
    headers = {} if key else {TENANT_HEADER: TENANT}
    url = f"{base}/v1/chat/completions"
    return [Client(url, {**BODY, "stream": stream}, key, headers) for _ in range(n)]


async def mixed(
    paths: list[tuple[str, str | None]],
    stream: bool,
    concurrency: int,
    seconds: float,
    warmup: float,
    window: float,
    done: list[int] | None = None,
) -> list[Window]:
    """``2 * concurrency`` clients, each sending its requests to the two ``paths`` in turn,
    so about ``concurrency`` are on each path at a time, both paths see the same engine,
    batches and machine, and a client's place in the engine's batches is shared by both.

    Returns:
        For each ``window`` seconds after ``warmup``, the requests that started in it, per
        path: their latencies, and their latencies less the worker's own time. ``done``,
        if given, gets the number of requests answered, warm-up included.
    """
    pool = [
        [c for base, k in paths for c in clients(base, k, stream, 1)]
        for _ in range(2 * concurrency)
    ]
    for c in pool[0]:
        await one(c)  # the first answer after a pause is slow on either path
    begin = time.perf_counter() + warmup
    n = int(seconds / window)
    end = begin + n * window
    out: list[Window] = [([], []) for _ in range(n)]
    answered = len(pool[0])

    async def client(i: int) -> None:
        nonlocal answered
        path = i % 2  # half the clients start on each path
        while time.perf_counter() < end:
            start = time.perf_counter()
            c = pool[i][path]
            x = await one(c)
            answered += x is not None
            if x is not None and begin <= start < end:
                own = None if c.worker_s is None else x - c.worker_s
                out[int((start - begin) / window)][path].append((x, own))
            path ^= 1

    try:
        await asyncio.gather(*(client(i) for i in range(2 * concurrency)))
    finally:
        for pair in pool:
            for c in pair:
                c.close()
    if done is not None:
        done.append(answered)
    return out


def in_python(
    paths: list[tuple[str, str | None]],
    stream: bool,
    concurrency: int,
    seconds: float,
    warmup: float,
    window: float,
    done: list[int] | None = None,
) -> list[Window]:
    """:func:`mixed` on this process's event loop (``_load.Client``)."""
    return uvloop.run(mixed(paths, stream, concurrency, seconds, warmup, window, done))


def starts(
    paths: list[tuple[str, str | None]],
    stream: bool,
    concurrency: int,
    seconds: float,
    n: int,
    warmup: float,
    window: float,
    load: Mixed = in_python,
) -> list[Start]:
    """:func:`mixed` ``n`` times, ``seconds / n`` each, every time from an idle engine.

    With more requests than it has rows, an engine's batch keeps the grouping its first
    arrivals gave it: all rows joining and ending together, or in two or three groups
    that take turns. One grouping lasts the whole of one run, and at 64 it moved the
    gateway's added p50 from 0.5-2.4 ms (groups) to 2.8-3.5 ms (one group: the
    gateway relays a burst of 64 answers). Several starts sample the groupings, as a
    service's load would over a day. The first path is the worker's; its ``/health``
    tells how many requests joined per prefill pass in each start.
    """
    out: list[Start] = []
    for _ in range(n):
        before = _prefills(paths[0][0])
        done: list[int] = []
        windows = load(paths, stream, concurrency, seconds / n, warmup, window, done)
        after = _prefills(paths[0][0])
        joined = None
        if before is not None and after is not None and after > before:
            joined = done[0] / (after - before)
        out.append((windows, joined))
    return out


def _prefills(worker: str) -> int | None:
    prefills = httpx.get(f"{worker}/health", timeout=10).json().get("prefills")
    return None if prefills is None else int(prefills)


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


def added_in(windows: list[Window], own: bool = True) -> list[str]:
    """The added p50 and p99 (ms) of :func:`mixed`'s windows, with 95% intervals.

    With ``own``, of the latency less the worker's own time (the gateway's share: the
    hops, the gateway's work and its queues), else of the latency itself.
    """
    out = []
    for q in (50, 99):
        mean, lo, hi = mean_ci(_diffs(windows, own, q))
        out.append(f"{mean:.2f} ({lo:.1f} to {hi:.1f})")
    return out


def added_across(runs: list[Start], own: bool = True) -> list[str]:
    """The added p50 and p99 (ms) over :func:`starts`' runs: the mean of each run's mean
    over its windows, with a 95% interval from the runs (the windows of one run share its
    grouping, so they are not independent of each other across runs)."""
    out = []
    for q in (50, 99):
        means = [statistics.fmean(_diffs(windows, own, q)) for windows, _ in runs]
        mean, lo, hi = mean_ci(means)
        out.append(f"{mean:.2f} ({lo:.1f} to {hi:.1f})")
    return out


def _diffs(windows: list[Window], own: bool, q: float) -> list[float]:
    """Per window, the gateway's ``q``-th percentile less the direct path's (ms)."""
    diffs = []
    for d_w, g_w in windows:
        d, g = (_values(w, own) for w in (d_w, g_w))
        if d and g:
            diffs.append((pct(g, q) - pct(d, q)) * 1e3)
    return diffs


def _values(window: list[Sample], own: bool) -> list[float]:
    if not own:
        return [latency for latency, _ in window]
    return [rest for _, rest in window if rest is not None]


async def alternate(
    paths: list[tuple[str, str | None]], stream: bool, n: int
) -> dict[str, list[float]]:
    """Concurrency 1, one request to each path in turn, so drift hits both alike.

    Returns:
        Latencies per path, paired by index (a pair with a failed request is left out).
    """
    pool = [clients(base, k, stream, 1)[0] for base, k in paths]
    lat: dict[str, list[float]] = {base: [] for base, _ in paths}
    try:
        for c in pool:
            for _ in range(5):  # warm up
                await one(c)
        for _ in range(n):
            pair = [await one(c) for c in pool]
            got = [x for x in pair if x is not None]
            if len(got) == len(pair):
                for (base, _), x in zip(paths, got, strict=True):
                    lat[base].append(x)
    finally:
        for c in pool:
            c.close()
    return lat


def in_turn(paths: list[tuple[str, str | None]], stream: bool, n: int) -> dict[str, list[float]]:
    """:func:`alternate` on this process's event loop (``_load.Client``)."""
    return uvloop.run(alternate(paths, stream, n))


def paired_ratio(direct: list[float], gateway: list[float]) -> tuple[float, float, float]:
    """Throughput through the gateway over direct at concurrency 1 (mean latency over mean
    latency), and its 95% confidence interval from the paired differences."""
    d = statistics.fmean(direct)
    diffs = [g - x for g, x in zip(gateway, direct, strict=True)]
    mean, half = statistics.fmean(diffs), 1.96 * statistics.stdev(diffs) / len(diffs) ** 0.5
    return d / (d + mean), d / (d + mean + half), d / (d + mean - half)


def null_check(direct: str, args: argparse.Namespace, load: Mixed) -> None:
    """:func:`mixed` between two identical paths: what the method finds with no gateway."""
    for stream in (False, True):
        paths: list[tuple[str, str | None]] = [(direct, None), (direct, None)]
        windows = load(paths, stream, 64, args.mixed, args.warmup, args.window, None)
        _report(f"{'stream' if stream else 'non-stream'}, direct against direct", windows)


def control(
    direct: str,
    gateway: str,
    key: str,
    cores: list[int],
    args: argparse.Namespace,
    load: Mixed,
    pairs: Alternate,
) -> None:
    """A minimal relay (``_relay.py``) for a control, non-stream: at 1, the worker
    directly, the relay and the gateway in turn (:func:`alternate`), so the relay's
    throughput shows what a hop that does nothing costs on this machine at this moment;
    at 64, :func:`mixed` between the relay and the worker directly, and between the
    gateway and the relay."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    worker = urlsplit(direct)
    script = Path(__file__).with_name("_relay.py")
    argv = [sys.executable, str(script), worker.hostname or "", str(worker.port), str(port)]
    relay = subprocess.Popen(argv)
    try:
        if cores:
            os.sched_setaffinity(relay.pid, cores)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        via = f"http://127.0.0.1:{port}"
        got = pairs([(direct, None), (via, None), (gateway, key)], False, args.n1)
        for label, path in (("relay", via), ("gateway", gateway)):
            ratio, low, high = paired_ratio(got[direct], got[path])
            added = [b - a for a, b in zip(got[direct], got[path], strict=True)]
            print(
                f"non-stream at 1, {label} against direct: added mean "
                f"{statistics.fmean(added) * 1e3:.3f} ms, p50 {pct(added, 50) * 1e3:.3f} ms, "
                f"throughput {ratio:.1%} ({low:.1%}–{high:.1%})",
                flush=True,
            )
        runs: list[tuple[str, list[tuple[str, str | None]]]] = [
            ("relay against direct", [(direct, None), (via, None)]),
            ("gateway against relay", [(via, None), (gateway, key)]),
        ]
        for label, paths in runs:
            windows = load(paths, False, 64, args.mixed, args.warmup, args.window, None)
            _report(f"non-stream, {label}", windows)
    finally:
        relay.kill()
        relay.wait()


def _report(label: str, windows: list[Window]) -> None:
    print(f"{label} at 64+64:")
    for own in (True, False):
        p50, p99 = added_in(windows, own)
        what = "less the worker's time" if own else "latency"
        print(f"  added p50 {p50} ms, p99 {p99} ms ({what})", flush=True)
