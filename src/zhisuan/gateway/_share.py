"""Split a replica's device time and energy fairly among the requests it serves.

While ``n`` requests are in flight on a replica, each accrues ``dt / n`` seconds of device
time (and ``dE / n`` of measured energy), so the shares of all requests add up to the
replica's busy time exactly. Energy is *measured* when the device exposes an energy
counter (NVML on NVIDIA GPUs) and *estimated* as busy time × the device's power otherwise;
every figure carries which.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

EnergyReader = Callable[[], float]
"""Returns the device's cumulative energy in joules."""


@dataclass(slots=True)
class Ticket:
    """Integrator readings when a request started."""

    device_s: float
    energy_j: float


@dataclass(slots=True)  # not frozen: a frozen class's __init__ costs more, once per request
class Share:
    """One request's part of the device: seconds, watt-hours and how they were obtained."""

    device_s: float
    energy_wh: float
    energy_source: str  # "measured" | "estimated"


class ShareMeter:
    """The per-replica integrator.

    Args:
        power_w: device power used for estimates (watts).
        energy_reader: cumulative energy counter in joules, when the device has one.
        clock: monotonic seconds (for tests).
    """

    def __init__(
        self,
        power_w: float,
        energy_reader: EnergyReader | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.power_w = power_w
        self._reader = energy_reader
        self._clock = clock
        self._n = 0
        self._last_t = clock()
        self._last_e = self._read()
        self._device_s = 0.0
        self._energy_j = 0.0

    @property
    def source(self) -> str:
        return "measured" if self._reader is not None else "estimated"

    def begin(self) -> Ticket:
        """A request starts on this replica."""
        self._advance()
        self._n += 1
        return Ticket(self._device_s, self._energy_j)

    def end(self, ticket: Ticket) -> Share:
        """The request ends; returns its share."""
        self._advance()
        self._n = max(0, self._n - 1)
        device_s = self._device_s - ticket.device_s
        if self._reader is not None:
            return Share(device_s, (self._energy_j - ticket.energy_j) / 3600.0, "measured")
        return Share(device_s, device_s * self.power_w / 3600.0, "estimated")

    def _advance(self) -> None:
        now = self._clock()
        energy = self._read()
        if self._n > 0:
            self._device_s += (now - self._last_t) / self._n
            self._energy_j += (energy - self._last_e) / self._n
        self._last_t, self._last_e = now, energy

    def _read(self) -> float:
        if self._reader is None:
            return 0.0
        try:
            return self._reader()
        except Exception:  # a flaky counter must not fail requests; fall back to estimates
            logger.warning("energy counter failed; estimating from power from now on")
            self._reader = None
            return 0.0


def nvml_energy_reader(device: str) -> EnergyReader | None:
    """An NVML energy counter for ``cuda:N``, or None when NVML is unavailable.

    Uses ``nvmlDeviceGetTotalEnergyConsumption`` (millijoules since driver load; Volta and
    newer). Needs the ``nvidia-ml-py`` package (``pip install 'zhisuan[nvidia]'``).
    """
    if not device.startswith("cuda:"):
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(int(device.split(":", 1)[1]))
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except Exception as exc:
        logger.info("no NVML energy counter for %s (%s): energy will be estimated", device, exc)
        return None

    def read() -> float:
        return float(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)) / 1000.0

    return read
