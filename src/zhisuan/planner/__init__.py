"""Pure estimation: training and serving plans, validated against published runs.

Public API::

    from zhisuan.planner import TrainRequest, plan_train, ServeRequest, plan_serve, run_validation

    plan_train(TrainRequest(model="llama3-70b", tokens=15e12, device="h100", count=1024))
    plan_serve(ServeRequest(model="llama2-70b", device="h100", count=8, slo="llama2-70b"))

Everything here is plain arithmetic on catalog facts: no I/O beyond reading the packaged YAML,
no heavy imports, fast enough for sweeps of thousands of configurations.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zhisuan.planner._common import Layout
    from zhisuan.planner.mfu import FITTED, MfuParams
    from zhisuan.planner.serve import SLO_PRESETS, ServeRequest, ServeResult, plan_serve
    from zhisuan.planner.train import TrainRequest, TrainResult, plan_train
    from zhisuan.planner.validate import Report
    from zhisuan.planner.validate import validate as run_validation

# Lazy re-exports: `zhisuan plan train` should not pay for the serving and validation modules.
_WHERE = {
    "Layout": "_common",
    "FITTED": "mfu",
    "MfuParams": "mfu",
    "SLO_PRESETS": "serve",
    "ServeRequest": "serve",
    "ServeResult": "serve",
    "plan_serve": "serve",
    "TrainRequest": "train",
    "TrainResult": "train",
    "plan_train": "train",
    "Report": "validate",
    "run_validation": "validate",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        attr = "validate" if name == "run_validation" else name
        return getattr(import_module(f"zhisuan.planner.{_WHERE[name]}"), attr)
    raise AttributeError(f"module 'zhisuan.planner' has no attribute {name!r}")


__all__ = [
    "FITTED",
    "SLO_PRESETS",
    "Layout",
    "MfuParams",
    "Report",
    "ServeRequest",
    "ServeResult",
    "TrainRequest",
    "TrainResult",
    "plan_serve",
    "plan_train",
    "run_validation",
]
