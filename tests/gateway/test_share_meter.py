"""Device time and energy split among concurrent requests."""

from __future__ import annotations

import pytest

from zhisuan.gateway._share import ShareMeter


class Clock:
    t = 0.0

    def __call__(self) -> float:
        return self.t


def test_shares_add_up_to_busy_time_and_energy() -> None:
    clock = Clock()
    meter = ShareMeter(power_w=360.0, clock=clock)
    a = meter.begin()
    clock.t = 1.0
    b = meter.begin()  # a alone for 1 s
    clock.t = 3.0
    sa = meter.end(a)  # both for 2 s: 1 s each
    clock.t = 4.0
    sb = meter.end(b)  # b alone for 1 s
    assert sa.device_s == pytest.approx(2.0)
    assert sb.device_s == pytest.approx(2.0)
    assert sa.device_s + sb.device_s == pytest.approx(4.0)  # the busy time
    assert sa.energy_wh == pytest.approx(2.0 * 360 / 3600)
    assert sa.energy_source == "estimated"


def test_measured_energy_is_split_by_the_counter() -> None:
    clock = Clock()
    joules = [0.0]
    meter = ShareMeter(power_w=1.0, energy_reader=lambda: joules[0], clock=clock)
    a = meter.begin()
    b = meter.begin()
    clock.t, joules[0] = 1.0, 7200.0
    sa = meter.end(a)
    sb = meter.end(b)
    assert sa.energy_source == "measured"
    assert sa.energy_wh == pytest.approx(1.0)
    assert sb.energy_wh == pytest.approx(1.0)


def test_a_failing_counter_falls_back_to_estimates() -> None:
    calls = [0]

    def flaky() -> float:
        calls[0] += 1
        if calls[0] > 1:
            raise OSError("gone")
        return 0.0

    meter = ShareMeter(power_w=3600.0, energy_reader=flaky, clock=Clock())
    share = meter.end(meter.begin())
    assert share.energy_source == "estimated"
