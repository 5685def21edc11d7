"""Cold start of ``zhisuan serve --demo`` to ready, and the gateway's idle memory.

Targets (issue 2): ready in under 10 s on 2 cores; gateway resident memory under 200 MB
when idle (the gateway only: engines live in their own worker processes).

Run: ``.venv/bin/python benchmarks/bench_serve_startup.py [--runs 3]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.server._serve import start_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    fresh: list[float] = []
    warm: list[float] = []
    rss: list[float] = []
    workers: dict[str, float] = {}
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp) / "home"
            for label, bucket in (("fresh home", fresh), ("existing home", warm)):
                srv = start_server(home, "--demo")
                try:
                    start = time.monotonic()
                    srv.wait_ready(timeout=120)
                    bucket.append(time.monotonic() - start)
                    if label == "existing home":
                        time.sleep(2.0)  # idle
                        gateway = psutil.Process(srv.proc.pid)
                        rss.append(gateway.memory_info().rss / 2**20)
                        for child in gateway.children(recursive=True):
                            cmd = " ".join(child.cmdline())
                            name = cmd.split("--model-name ")[1].split()[0]
                            workers[name] = child.memory_info().rss / 2**20
                finally:
                    srv.stop()
                print(f"run {run + 1}: {label}: ready in {bucket[-1]:.2f} s", flush=True)
    print()
    print("| measure | median | runs |")
    print("|---|---|---|")
    for label, xs, unit in (
        ("cold start to /ready, fresh home (imports demo models)", fresh, "s"),
        ("cold start to /ready, existing home", warm, "s"),
        ("gateway RSS when idle", rss, "MB"),
    ):
        runs = ", ".join(f"{x:.2f}" for x in xs)
        print(f"| {label} | {statistics.median(xs):.2f} {unit} | {runs} |")
    for name, mb in sorted(workers.items()):
        print(f"| worker RSS ({name}, for reference) | {mb:.0f} MB | last run |")
    print()
    print("targets: ready < 10 s; gateway idle RSS < 200 MB")


if __name__ == "__main__":
    main()
