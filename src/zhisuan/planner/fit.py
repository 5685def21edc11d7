"""Fit the utilisation model's three constants on the calibration rows, once.

Run ``python -m zhisuan.planner.fit`` to print the constants; they are recorded in
:data:`zhisuan.planner.mfu.FITTED`, and a test re-runs this fit and checks the recorded values,
so nobody tunes them by hand. The objective is the sum of squared log errors over the rows whose
role is ``calibration`` and whose prediction depends on the model. The search is a deterministic
coarse-to-fine grid (no random starts, no SciPy), so the result is reproducible.
"""

from __future__ import annotations

import math

from zhisuan.catalog import Catalog, load_catalog
from zhisuan.planner.mfu import MfuParams
from zhisuan.planner.validate import Run, load_runs, predict

#: Search box: u_max (share of peak), c_kernel (dimensionless), k_comm (bandwidth derating).
BOUNDS = ((0.2, 1.0), (0.0, 30.0), (0.1, 4.0))
#: Row kinds whose prediction depends on the fitted constants.
MODEL_KINDS = frozenset({"hw_tflops", "e2e_tflops_6nd", "steady_days", "gpu_hours", "mfu"})


def calibration_runs() -> list[Run]:
    """The rows the constants are fitted on.

    Returns:
        Calibration rows whose prediction depends on the utilisation model.
    """
    return [r for r in load_runs() if r.role == "calibration" and r.kind in MODEL_KINDS]


def objective(params: MfuParams, runs: list[Run], cat: Catalog) -> float:
    """Sum of squared log errors.

    Args:
        params: candidate constants.
        runs: calibration rows.
        cat: catalog.

    Returns:
        The loss (lower is better).
    """
    total = 0.0
    for run in runs:
        pred, _ = predict(run, cat, params)
        if pred <= 0:
            return math.inf
        total += math.log(pred / float(run.published)) ** 2
    return total


def _grid(lo: float, hi: float, n: int) -> list[float]:
    return [lo + (hi - lo) * i / (n - 1) for i in range(n)]


def fit(catalog: Catalog | None = None, *, points: int = 9, rounds: int = 6) -> MfuParams:
    """Fit ``u_max``, ``c_kernel`` and ``k_comm``.

    Args:
        catalog: catalog (default: built-in).
        points: grid points per axis per round.
        rounds: refinement rounds (each shrinks the box around the best point).

    Returns:
        The fitted constants, rounded to 4 significant digits.
    """
    cat = catalog if catalog is not None else load_catalog()
    runs = calibration_runs()
    box = [list(b) for b in BOUNDS]
    best = MfuParams(*(0.5 * (lo + hi) for lo, hi in box))
    best_loss = objective(best, runs, cat)
    for _ in range(rounds):
        axes = [_grid(lo, hi, points) for lo, hi in box]
        for u in axes[0]:
            for c in axes[1]:
                for k in axes[2]:
                    cand = MfuParams(u, c, k)
                    loss = objective(cand, runs, cat)
                    if loss < best_loss - 1e-12:
                        best, best_loss = cand, loss
        for axis, centre in enumerate((best.u_max, best.c_kernel, best.k_comm)):
            lo, hi = box[axis]
            half = (hi - lo) / (points - 1) * 1.5
            box[axis] = [max(BOUNDS[axis][0], centre - half), min(BOUNDS[axis][1], centre + half)]
    return MfuParams(*(float(f"{v:.4g}") for v in (best.u_max, best.c_kernel, best.k_comm)))


def main() -> None:
    """Print the fitted constants in the form recorded in ``mfu.py``."""
    params = fit()
    print(
        f"FITTED = MfuParams(u_max={params.u_max}, c_kernel={params.c_kernel}, "
        f"k_comm={params.k_comm})"
    )


if __name__ == "__main__":
    main()
