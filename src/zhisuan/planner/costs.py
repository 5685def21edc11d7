"""End-to-end efficiency, energy, CO2 and money.

End-to-end efficiency (failures, restarts, checkpoints) uses Young's optimal checkpoint
interval. With ``M`` the job's mean time between failures (device MTBF / devices), ``δ`` the time
to write a checkpoint and ``R`` the time to restart::

    τ = sqrt(2·δ·M)            overhead = δ/τ + (τ/2 + R)/M            efficiency = 1/(1+overhead)

so efficiency falls as the cluster grows. The constants come from the Llama 3 report
(Llama Team 2024, §3.3.4: 419 unexpected interruptions in 54 days on 16,384 H100 ≈ one per
50,000 device-hours, and >90% effective training time), with δ = 30 s (asynchronous
checkpointing) and R = 5 min (automated restart).

Energy has two modes: ``tdp`` (devices x TDP x hours x PUE, an upper bound as Meta reports) and
``average`` (devices x average draw x hours x PUE, as Patterson et al. measure).
"""

from __future__ import annotations

import math

from zhisuan.errors import InvalidParameter

MTBF_DEVICE_HOURS = 50_000.0
CHECKPOINT_WRITE_HOURS = 0.5 / 60.0
RESTART_HOURS = 5.0 / 60.0

#: Indicative exchange rates to USD (2024 averages); used only to compare prices across
#: currencies. Override with an explicit --price-per-hour in your own currency.
USD_PER = {"USD": 1.0, "CNY": 1.0 / 7.2, "EUR": 1.08, "JPY": 1.0 / 150.0}

#: China national grid average emission factor 2022 (MEE), kg CO2 per kWh.
DEFAULT_GRID_KG_PER_KWH = 0.5703
DEFAULT_PUE = 1.2
#: Indicative industrial electricity price, USD per kWh.
DEFAULT_ELECTRICITY_USD_PER_KWH = 0.10
DEFAULT_AMORTISATION_YEARS = 4.0


def end_to_end_efficiency(devices: float) -> float:
    """Share of wall time spent on useful steps, given failures that grow with cluster size.

    Args:
        devices: devices in the job.

    Returns:
        A fraction in (0, 1].
    """
    if devices <= 0:
        return 1.0
    mtbf = MTBF_DEVICE_HOURS / devices
    tau = math.sqrt(2.0 * CHECKPOINT_WRITE_HOURS * mtbf)
    overhead = CHECKPOINT_WRITE_HOURS / tau + (tau / 2.0 + RESTART_HOURS) / mtbf
    return 1.0 / (1.0 + overhead)


def energy_mwh(devices: float, hours: float, *, watts: float, pue: float) -> float:
    """Facility energy in MWh.

    Args:
        devices: devices drawing power.
        hours: wall hours.
        watts: power per device (TDP or average).
        pue: power usage effectiveness (>= 1).

    Returns:
        MWh.
    """
    return devices * watts * hours * pue / 1e6


def convert(amount: float, src: str, dst: str) -> float:
    """Convert between currencies with the indicative rates in :data:`USD_PER`.

    Args:
        amount: money in ``src``.
        src: ISO code.
        dst: ISO code.

    Returns:
        Money in ``dst``.

    Raises:
        InvalidParameter: an unknown currency.
    """
    if src == dst:
        return amount
    try:
        return amount * USD_PER[src.upper()] / USD_PER[dst.upper()]
    except KeyError as exc:
        raise InvalidParameter(
            f"unknown currency {exc.args[0]!r}; known: {', '.join(USD_PER)}", param="currency"
        ) from exc


def purchase_cost(
    *,
    devices: float,
    price_each: float,
    hours: float,
    energy_mwh_total: float,
    electricity_per_kwh: float,
    years: float = DEFAULT_AMORTISATION_YEARS,
) -> float:
    """Cost of owned hardware: straight-line amortisation for the time used plus electricity.

    Args:
        devices: devices used.
        price_each: purchase price per device.
        hours: wall hours used.
        energy_mwh_total: facility energy.
        electricity_per_kwh: price per kWh in the same currency.
        years: amortisation period.

    Returns:
        Money.
    """
    amortised = devices * price_each * hours / (years * 365.0 * 24.0)
    return amortised + energy_mwh_total * 1000.0 * electricity_per_kwh
