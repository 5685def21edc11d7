"""The store's plain bounds live in :mod:`zhisuan.limits`, which loads no SQLAlchemy, and
:mod:`zhisuan.store` re-exports them unchanged."""

from __future__ import annotations

import subprocess
import sys

import pytest

from zhisuan import limits


def test_importing_the_limits_loads_no_store() -> None:
    code = (
        "import sys, zhisuan.limits; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sqlalchemy'"
        " or m.startswith('zhisuan.') and m != 'zhisuan.limits'))"
    )
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
    assert "sqlalchemy" not in out.stderr  # -X importtime: not even imported and dropped


@pytest.mark.parametrize("name", ["MAX_REPLICAS", "MAX_WEIGHT", "MONEY_PLACES", "BUDGET_STEP"])
def test_the_store_re_exports_each_limit(name: str) -> None:
    import zhisuan.store

    assert name in zhisuan.store.__all__
    assert getattr(zhisuan.store, name) == getattr(limits, name)


def test_the_limits_keep_their_values() -> None:
    from zhisuan.store import models

    assert models.MAX_REPLICAS == limits.MAX_REPLICAS == 64  # the tables' own docs name it
    assert (limits.MAX_WEIGHT, limits.MONEY_PLACES) == (100, 6)
    assert limits.BUDGET_STEP == 10.0**-6
