"""The benchmark's native load generator (``_loadgen.c``), built with the host's C compiler.

At concurrency 64 on a 2-core host the load generator shares the gateway's core, and
every microsecond it spends on a burst of answers is one the gateway's answers wait for
(clients on other machines would take none). ``_load.Client`` takes about 0.055 ms of CPU
per request in Python; this one, in C on epoll, a fraction of it. It runs the same method
as :func:`_alternating.mixed` (clients alternating between paths, timed from the write to
the answer's last byte, the worker's own time read from its ``server-timing``) in a
process of its own, which inherits the benchmark's CPU affinity and scheduling policy.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from _alternating import ERRORS, Window, clients

SOURCE = Path(__file__).with_name("_loadgen.c")


def build() -> Path | None:
    """The compiled load generator, built once per version of its source (None, with the
    reason printed: no C compiler on this host, or it failed)."""
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        print("no C compiler (CC, or cc) for the native load generator")
        return None
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "zhisuan-bench"
    exe = cache / f"loadgen-{digest}"
    if not exe.exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = exe.with_suffix(f".{os.getpid()}")
        argv = [compiler, "-O2", "-std=c11", "-o", str(tmp), str(SOURCE)]
        got = subprocess.run(argv, capture_output=True, text=True, check=False)
        if got.returncode != 0:
            tmp.unlink(missing_ok=True)
            print(f"{compiler} could not build {SOURCE.name}: {got.stderr.strip()}")
            return None
        tmp.replace(exe)
    return exe


Answer = tuple[int, float, float, float | None, bool]
"""A request: its path, when it was sent (seconds from the end of the warm-up, negative
before it), its latency, its latency less the worker's own time (None: not told), and
whether it was answered (False: it failed, and is counted in ``ERRORS``)."""


def run(
    exe: Path,
    paths: list[tuple[str, str | None]],
    stream: bool,
    n_clients: int,
    seconds: float,
    warmup: float,
    done: list[int] | None = None,
    requests: int = 0,
) -> list[Answer]:
    """``n_clients`` clients, each sending its requests to the ``paths`` in turn for
    ``warmup + seconds`` or until it has sent ``requests`` (0: no limit), the gateway's
    with its key, the worker's without one (:func:`_alternating.clients`).

    Returns:
        Every request, in the order they ended. ``done``, if given, gets the number of
        requests answered, the failed ones left out.
    """
    argv = [str(exe), f"{seconds}", f"{warmup}", f"{n_clients}", f"{requests}"]
    with tempfile.TemporaryDirectory() as tmp:
        for i, (base, key) in enumerate(paths):
            client = clients(base, key, stream, 1)[0]
            request = Path(tmp) / f"request-{i}"
            request.write_bytes(client.request)
            argv += [client.host, str(client.port), str(request)]
        got = subprocess.run(argv, capture_output=True, text=True, check=False)
    if got.returncode != 0:
        raise RuntimeError(f"the load generator failed: {got.stderr.strip()}")
    out: list[Answer] = []
    for line in got.stdout.splitlines():
        kind, rest = line.split(" ", 1)
        if kind == "answered":
            if done is not None:
                done.append(int(rest))
        elif kind == "error":
            path, what = rest.split(" ", 1)
            name = f"{paths[int(path)][0]} {what}"
            ERRORS[name] = ERRORS.get(name, 0) + 1
        else:
            start, latency, worker, ok = rest.split()
            own = None if float(worker) < 0 else float(latency) - float(worker)
            out.append((int(kind), float(start), float(latency), own, ok == "1"))
    return out


def mixed(
    exe: Path,
    paths: list[tuple[str, str | None]],
    stream: bool,
    concurrency: int,
    seconds: float,
    warmup: float,
    window: float,
    done: list[int] | None = None,
) -> list[Window]:
    """:func:`_alternating.mixed` run by the native load generator: ``2 * concurrency``
    clients, each sending its requests to the two ``paths`` in turn.

    Returns:
        For each ``window`` seconds after ``warmup``, the requests that started in it, per
        path: their latencies, and their latencies less the worker's own time.
    """
    n = int(seconds / window)
    out: list[Window] = [([], []) for _ in range(n)]
    for path, start, latency, own, ok in run(
        exe, paths, stream, 2 * concurrency, n * window, warmup, done
    ):
        if ok and 0 <= start < n * window:
            out[int(start / window)][path].append((latency, own))
    return out


def steady(
    exe: Path,
    base: str,
    key: str | None,
    stream: bool,
    concurrency: int,
    seconds: float,
    warmup: float,
) -> list[float]:
    """:func:`bench_gateway_overhead.steady` run by the native load generator: the
    latencies of the requests that ended in the ``seconds`` after ``warmup``."""
    answers = run(exe, [(base, key)], stream, concurrency, seconds, warmup)
    return [x for _, start, x, _, ok in answers if ok and 0 <= start + x <= seconds]


def alternate(
    exe: Path, paths: list[tuple[str, str | None]], stream: bool, n: int
) -> dict[str, list[float]]:
    """:func:`_alternating.alternate` run by the native load generator: concurrency 1, one
    request to each path in turn, ``n`` rounds after five unmeasured ones.

    Returns:
        Latencies per path, paired by index (a round with a failed request is left out).
    """
    warm = 5
    answers = run(exe, paths, stream, 1, 1e9, 0.0, None, (warm + n) * len(paths))
    lat: dict[str, list[float]] = {base: [] for base, _ in paths}
    for at in range(warm * len(paths), len(answers), len(paths)):
        round_ = answers[at : at + len(paths)]
        assert [a[0] for a in round_] == list(range(len(paths))), "paths out of turn"
        if all(ok for *_, ok in round_):
            for (base, _), (_, _, latency, _, _) in zip(paths, round_, strict=True):
                lat[base].append(latency)
    return lat
