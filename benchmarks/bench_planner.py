"""Planner speed: CLI wall time and a 10,000-configuration sweep through the Python API.

Run: ``python benchmarks/bench_planner.py [--runs 7]``. Prints the median wall time of
``zhisuan plan train …`` (subprocess, cold interpreter each run; the target is < 300 ms), the
same for the plan command group alone and for a bare ``python -c "import typer"`` floor, and the
time to plan 10,000 training and serving configurations (target < 2 s).
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

TRAIN_ARGS = ["plan", "train", "--model", "llama3-70b", "--tokens", "15T", "--device", "h100",
              "--count", "1024", "--json"]  # fmt: skip


def _wall(cmd: list[str], runs: int) -> tuple[float, float]:
    """Median wall and median CPU (user + sys) seconds of a command."""
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def cli_times(runs: int) -> dict[str, tuple[float, float]]:
    """Median wall seconds of the CLI, the plan sub-app alone, and the import floor."""
    py = sys.executable
    exe = Path(py).with_name("zhisuan")
    out = {
        "python -c 'import typer' (floor)": _wall([py, "-c", "import typer"], runs),
        "plan sub-app only": _wall(
            [
                py,
                "-c",
                "import sys; from zhisuan.cli.plan import app; "
                f"sys.argv={['plan', *TRAIN_ARGS[1:]]!r}; app()",
            ],
            runs,
        ),
    }
    if exe.exists():
        out["zhisuan plan train (full CLI)"] = _wall([str(exe), *TRAIN_ARGS], runs)
    return out


def sweep(n: int = 10_000) -> tuple[float, int]:
    """Plan ``n`` configurations (half training, half serving); returns (seconds, fits)."""
    from zhisuan.catalog import load_catalog
    from zhisuan.planner import ServeRequest, TrainRequest, plan_serve, plan_train

    cat = load_catalog()
    models = [cat.model(m) for m in ("llama3-8b", "llama3-70b", "qwen2.5-72b", "mixtral-8x7b",
                                     "gpt3-175b")]  # fmt: skip
    devices = [cat.accelerator(d) for d in ("h100-sxm", "a100-80gb", "ascend-910b", "mi300x",
                                            "h20")]  # fmt: skip
    counts = [64, 128, 256, 512, 1024, 2048, 4096, 8192]
    tokens = [1e11 * (i + 1) for i in range(25)]
    train_cfgs = list(itertools.product(models, devices, counts, tokens))[: n // 2]
    serve_cfgs = list(itertools.product(models, devices, [1, 2, 4, 8], [256, 1024, 4096],
                                        [64, 256, 1024], [1, 8, 32, 128, None]))  # fmt: skip
    serve_cfgs = (serve_cfgs * (n // 2 // len(serve_cfgs) + 1))[: n - len(train_cfgs)]
    fits = 0
    start = time.perf_counter()
    for model, device, count, tok in train_cfgs:
        req = TrainRequest(model=model, tokens=tok, device=device, count=count, scaling=False)
        fits += plan_train(req, catalog=cat).fits
    for model, device, count, prompt, output, conc in serve_cfgs:
        sreq = ServeRequest(model=model, device=device, count=count, prompt_tokens=prompt,
                            output_tokens=output, concurrency=conc)  # fmt: skip
        fits += plan_serve(sreq, catalog=cat).fits
    return time.perf_counter() - start, fits


def main() -> None:
    """Print the benchmark figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--configs", type=int, default=10_000)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (wall time suffers)")
    for name, (wall, cpu) in cli_times(args.runs).items():
        print(f"{name:36s} median {wall * 1000:5.0f} ms wall, {cpu * 1000:5.0f} ms CPU")
    seconds, fits = sweep(args.configs)
    print(f"sweep of {args.configs:,} configurations {seconds:7.2f} s "
          f"({seconds / args.configs * 1e6:.0f} us each, {fits:,} fit)")  # fmt: skip


if __name__ == "__main__":
    main()
