"""Plain numbers that bound what the store keeps, for every layer that states or checks them,
and the reading of an amount of money as written (:func:`written_amount`).

Nothing here imports more than the standard library, so the command line can put a cap in a
help text without loading the store (SQLAlchemy takes about 0.4 s to import).
:mod:`zhisuan.store` re-exports them.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

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


def written_amount(text: str) -> Decimal:
    """An amount of money as it was written, for the store to judge: ``1.00000000000000001``
    stays that, where a float would be 1.0 and pass for a budget of whole steps.

    ``nan`` and ``inf`` read as such, for the store to refuse with its hint; an exponent past
    what a decimal holds (``1e99999999999999999999``) reads as a float would, infinite or 0.

    Args:
        text: the amount, e.g. ``"12.5"``, ``"1e3"`` (a JSON number, or a command-line option).

    Returns:
        The amount, exact.

    Raises:
        ValueError: ``text`` is not a number.
    """
    try:
        return Decimal(text)
    except InvalidOperation:
        pass
    try:
        return Decimal(float(text))
    except ValueError:
        raise ValueError(f"{text.strip()!r} is not a number") from None
