"""Checks of what tenants and keys carry: names, currencies, limits, weights, allow-lists,
times."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from decimal import ROUND_DOWN, ROUND_HALF_UP, ROUND_UP, Decimal
from typing import Any

from zhisuan.errors import InvalidParameter
from zhisuan.limits import BUDGET_STEP, MAX_WEIGHT, MONEY_PLACES
from zhisuan.store._share_models import (
    ADMIN_TENANT,
    ANONYMOUS,
    LIMIT_FIELDS,
    ApiKey,
    Tenant,
)

TENANT_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
CURRENCY_RE = re.compile(r"[A-Z]{3}")

# Column ranges: Integer, BigInteger, Numeric(18, 6).
LIMIT_MAX: dict[str, float] = {
    "rpm": 2**31 - 1,
    "tpm": 2**31 - 1,
    "max_concurrent": 2**31 - 1,
    "tokens_per_day": 2**63 - 1,
    "budget": 1e12 - 1,
}
_STEP = Decimal(1).scaleb(-MONEY_PLACES)
_HALF_STEP = _STEP / 2
_PLAIN_EXPONENT = 20  # a decimal shown further from 1 than this is shown with an exponent


def apply_limits(row: Tenant | ApiKey, changes: dict[str, Any]) -> None:
    """Validate and set limits / allow-list / currency on ``row``.

    A number may be an int, a float or a :class:`~decimal.Decimal`: the admin API and the
    CLI give a budget as the decimal the client wrote (:func:`zhisuan.limits.written_amount`),
    judged as such; it is stored as a float, as every other.
    """
    for field, value in changes.items():
        if field == "models":
            value = check_models(value)
        elif field in LIMIT_FIELDS and value is not None:
            is_number = isinstance(value, int | float | Decimal) and not isinstance(value, bool)
            if is_number and not _finite(value):  # nan slips past every comparison
                raise InvalidParameter(
                    f"{field} must be a finite number, got {_shown(value)}",
                    param=field,
                    hint="give a positive number, or leave the limit out for no limit",
                )
            if is_number and value > LIMIT_MAX[field]:
                raise InvalidParameter(
                    f"{field} {_shown(value)} is too large (at most {LIMIT_MAX[field]:g})",
                    param=field,
                    hint="leave a limit out for no limit",
                )
            if not is_number or value <= 0 or (field != "budget" and value != int(value)):
                kind = "a positive amount" if field == "budget" else "a positive whole number"
                raise InvalidParameter(
                    f"{field} must be {kind}, got {_shown(value)}",
                    param=field,
                    hint="leave a limit out (or clear it) for no limit",
                )
            if field == "budget":
                check_budget_kept(value)
            value = float(value) if field == "budget" else int(value)
        setattr(row, field, value)


def check_budget_kept(budget: float | Decimal) -> None:
    """Refuse a positive budget that the column cannot keep as given (see
    :data:`BUDGET_STEP`): one it would store as 0, or one with more decimal places than it
    keeps.

    Args:
        budget: a positive amount up to ``LIMIT_MAX["budget"]``: a decimal is judged as it
            is, a float as its shortest digits (``repr``), which is how it was written.

    Raises:
        InvalidParameter: ``budget`` is under half of :data:`BUDGET_STEP`, or is not a
            whole number of its steps.
    """
    step = f"{BUDGET_STEP:.{MONEY_PLACES}f}"
    given = budget if isinstance(budget, Decimal) else Decimal(repr(budget))
    if given < _HALF_STEP:
        shown = _written(given) if isinstance(budget, Decimal) else f"{budget:g}"
        raise InvalidParameter(
            f"budget {shown} is under half of {step}, the smallest step of a budget (kept "
            f"to {MONEY_PLACES} decimal places): it would be stored as 0, which allows no "
            "spending",
            param="budget",
            hint=f"give {step} or more, or leave the budget out for no limit",
        )
    if given == given.quantize(_STEP):
        return
    kept = [_plain(given.quantize(_STEP, way)) for way in (ROUND_DOWN, ROUND_UP)]
    raise InvalidParameter(
        f"budget {_written(given)} has more decimal places than a budget keeps "
        f"({MONEY_PLACES}, in steps of {step}): it would be rounded to "
        f"{_plain(given.quantize(_STEP, ROUND_HALF_UP))}",
        param="budget",
        hint=f"give at most {MONEY_PLACES} decimal places, e.g. "
        + " or ".join(amount for amount in kept if Decimal(amount) > 0),
    )


def _finite(number: float | Decimal) -> bool:
    return number.is_finite() if isinstance(number, Decimal) else math.isfinite(number)


def _shown(value: Any) -> str:
    """A limit as given, for a message: a decimal as written, anything else as Python
    shows it (``inf``, ``0.0``, ``'many'``)."""
    return _written(value) if isinstance(value, Decimal) else repr(value)


def _written(amount: Decimal) -> str:
    """``amount`` as the client wrote it, digit for digit (``1.00000000000000001``,
    ``0.0000004``, ``2.50``), with an exponent only far from 1 (``1e+400``); non-finite ones
    as a float shows them (``nan``, ``-inf``)."""
    if amount.is_nan():
        return "nan"
    if amount.is_infinite():
        return "-inf" if amount.is_signed() else "inf"
    return format(amount, "e" if abs(amount.adjusted()) > _PLAIN_EXPONENT else "f")


def _plain(amount: Decimal) -> str:
    """``amount`` without an exponent or trailing zeros (``1.000001``, ``100``), every digit
    kept (``normalize`` would round past the context's 28)."""
    text = format(amount, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def check_weight(weight: Any) -> int:
    """A tenant's weight: a whole number from 1 to :data:`MAX_WEIGHT`.

    Raises:
        InvalidParameter: anything else (a bool, a fraction, none).
    """
    number = isinstance(weight, int | float) and not isinstance(weight, bool)
    if number and math.isfinite(weight) and weight == int(weight) and 1 <= weight <= MAX_WEIGHT:
        return int(weight)
    raise InvalidParameter(
        f"weight must be a whole number from 1 to {MAX_WEIGHT}, got {weight!r}",
        param="weight",
        hint=f"give 1 to {MAX_WEIGHT} (the default is 1): a tenant of weight N has up to N "
        "requests started per turn in a replica's queue",
    )


def check_models(models: list[str] | None) -> list[str] | None:
    """The allow-list cleaned (None: every model).

    Raises:
        InvalidParameter: an empty list, or a name empty or over 128 characters.
    """
    if models is None:
        return None
    cleaned = [m.strip() for m in models]
    if not cleaned or any(not m or len(m) > 128 for m in cleaned):
        raise InvalidParameter(
            "the model allow-list must name at least one model, each 1-128 characters",
            param="models",
            hint="e.g. --models qwen2.5-0.5b,llama-3.2-1b; leave it out to allow every model",
        )
    return list(dict.fromkeys(cleaned))


def check_within_tenant(key: ApiKey, tenant: Tenant | None) -> None:
    """Refuse a key allow-list that names a model its tenant may not use (the key could
    never use it: a key's list narrows its tenant's)."""
    if tenant is None or key.models is None or tenant.models is None:
        return
    outside = [m for m in key.models if m not in tenant.models]
    if outside:
        raise InvalidParameter(
            f"tenant {tenant.name!r} may not use {', '.join(map(repr, outside))}, so its key "
            "cannot either",
            param="models",
            hint=f"the tenant allows {', '.join(tenant.models)}; allow more with "
            f"`zhisuan tenants set {tenant.name} --models ...`",
        )


def as_utc(value: datetime, *, param: str = "time") -> datetime:
    """``value`` in UTC (naive = UTC already).

    Args:
        value: the time to convert.
        param: the field it came from, named in the error.

    Raises:
        InvalidParameter: ``value`` is within a day of the calendar's ends, and in UTC falls
            before year 1 or after year 9999.
    """
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise InvalidParameter(
            f"{param} {value.isoformat()} is out of range: in UTC it falls outside years 1-9999",
            param=param,
            hint="give a time between 0001-01-02 and 9999-12-30",
        ) from exc


def check_tenant_name(name: str) -> None:
    """Refuse a malformed or reserved tenant name."""
    if not TENANT_NAME_RE.fullmatch(name):
        raise InvalidParameter(
            f"invalid tenant name {name!r}",
            param="name",
            hint="use lowercase letters, digits and -_. (at most 64, starting with a letter "
            "or digit)",
        )
    if name in (ANONYMOUS, ADMIN_TENANT):
        raise InvalidParameter(
            f"{name!r} is reserved (usage served with auth off, or with an admin key)",
            param="name",
            hint="choose another name",
        )


def check_currency(currency: str) -> str:
    """An ISO 4217 code, upper-cased."""
    code = currency.strip().upper()
    if not CURRENCY_RE.fullmatch(code):
        raise InvalidParameter(
            f"invalid currency {currency!r}", param="currency", hint="use an ISO 4217 code: USD"
        )
    return code


def tenant_currency(currency: str | None, platform: str) -> str:
    """The currency of a tenant's budget: the platform's (``ZHISUAN_CURRENCY``), in which
    every deployment is priced and every cost recorded. Costs are not converted, so a budget
    in another currency could not be kept exactly, and is refused.

    Raises:
        InvalidParameter: a malformed code, or one other than the platform's.
    """
    code = check_currency(currency or platform)
    if code != check_currency(platform):
        raise InvalidParameter(
            f"a budget in {code} cannot be kept: prices and costs are in {platform.upper()}, "
            "and are not converted",
            param="currency",
            hint=f"leave the currency out, or run the gateway and the CLI with "
            f"ZHISUAN_CURRENCY={code} to price everything in {code}",
        )
    return code
