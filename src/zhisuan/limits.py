"""Plain numbers that bound what the store keeps, for every layer that states or checks them.

Nothing here imports more than the standard library, so the command line can put a cap in a
help text without loading the store (SQLAlchemy takes about 0.4 s to import).
:mod:`zhisuan.store` re-exports them.
"""

from __future__ import annotations

MAX_REPLICAS = 64
"""The most replicas (worker processes) one deployment may run: the store, the CLI and the
admin API refuse more."""

MAX_WEIGHT = 100
"""The largest weight of a tenant: the store refuses more, a replica's queue clamps to it."""

MONEY_PLACES = 6
"""Decimal places the money columns keep (budgets); PostgreSQL rounds to them."""

BUDGET_STEP = 10.0**-MONEY_PLACES
"""The step of a budget, and the smallest one above 0: the column keeps
:data:`MONEY_PLACES` decimal places. PostgreSQL would round a budget with more (half away
from zero: under half a step to 0, which is not "no budget" but allows no spending) while
SQLite kept it, so such a budget is refused rather than changed without a word."""
