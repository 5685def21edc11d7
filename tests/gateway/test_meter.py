"""The meter's end of a request: journal and quota at once, metrics and store record later."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from zhisuan.cluster import Replica, ReplicaSpec
from zhisuan.gateway import _meter
from zhisuan.gateway._exchange import Exchange
from zhisuan.gateway._meter import Meter
from zhisuan.gateway._metrics import Metrics
from zhisuan.gateway._quota import Limits, QuotaLedger
from zhisuan.gateway._writer import UsageWriter
from zhisuan.settings import Settings
from zhisuan.store.journal import UsageJournal

SPEC = ReplicaSpec(
    model="chat",
    engine="transformers",
    device="cpu",
    model_path="/m",
    options=(("price_input_per_mtok", 2.0), ("price_output_per_mtok", 6.0)),
)
SCOPE = ("tenant:team", Limits(tpm=10_000, budget=1.0))


class _NoReplicas:
    def replicas(self, model: str | None = None) -> list[Replica]:
        return []


class _Parts:
    def __init__(self, tmp_path: Path) -> None:
        self.stored: list[dict[str, Any]] = []
        self.ledger = QuotaLedger(lambda sid, now: (0, 0.0))
        self.writer = UsageWriter(self.stored.extend, linger_s=0.0)
        settings = Settings(home=tmp_path)
        self.meter = Meter(settings, Metrics(_NoReplicas()), self.ledger, self.writer)  # type: ignore[arg-type]

    def request(self, n: int) -> Exchange:
        """An admitted request that reserved 1,000 tokens and used 10 + 4."""
        ex = Exchange(request_id=f"r{n}", endpoint="chat.completions", model="chat")
        ex.context["tenant"] = "team"
        ex.context["reservation"] = self.ledger.admit([SCOPE], 1000, 0.004)
        self.meter.begin(ex)
        self.meter.start(ex, Replica(SPEC))
        ex.prompt_tokens, ex.completion_tokens = 10, 4
        ex.close("ok", 200)
        return ex

    def requests_counted(self) -> float:
        return sum(self.meter.metrics.requests.values())


def test_quota_is_settled_at_once_and_the_rest_follows(tmp_path: Path) -> None:
    parts = _Parts(tmp_path)

    async def go() -> None:
        parts.meter.finish(parts.request(1))
        use = parts.ledger.snapshot("tenant:team")
        assert use["tokens_last_minute"] == 14  # the actual use, not the 1,000 reserved
        assert use["reserved_cost"] == 0 and use["concurrent"] == 0
        assert use["cost_this_month"] == pytest.approx((10 * 2 + 4 * 6) / 1e6)
        assert parts.requests_counted() == 0  # metrics and record wait
        await asyncio.sleep(_meter.ACCOUNT_AFTER_S * 10)
        assert parts.requests_counted() == 1

    asyncio.run(go())
    parts.writer.close()
    assert [r["request_id"] for r in parts.stored] == ["r1"]
    assert parts.stored[0]["cost"] == parts.ledger.snapshot("tenant:team")["cost_this_month"]


def test_the_express_lanes_two_halves_are_the_whole_once(tmp_path: Path) -> None:
    parts = _Parts(tmp_path)
    parts.writer.close()
    journal = UsageJournal(tmp_path / "journal")
    parts.writer = UsageWriter(parts.stored.extend, journal, linger_s=0.0)
    parts.meter = Meter(Settings(home=tmp_path), parts.meter.metrics, parts.ledger, parts.writer)
    ex = parts.request(1)
    assert parts.meter.journal(ex) and not parts.meter.journal(ex)  # metered once
    assert journal.pending == 1  # durable before the answer is written
    held = parts.ledger.snapshot("tenant:team")
    assert held["concurrent"] == 1 and held["reserved_cost"] == pytest.approx(0.004)
    parts.meter.account(ex)  # after the answer: settled
    parts.meter.account(ex)  # and only once
    parts.meter.finish(ex)  # a finish after the halves does nothing more
    use = parts.ledger.snapshot("tenant:team")
    assert use["concurrent"] == 0 and use["reserved_cost"] == 0
    assert use["tokens_last_minute"] == 14
    parts.meter.flush()
    assert parts.requests_counted() == 1
    parts.writer.close()
    assert [r["request_id"] for r in parts.stored] == ["r1"]


def test_readers_on_other_threads_see_every_finished_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_meter, "ACCOUNT_AFTER_S", 3600.0)  # only a flush can account them
    parts = _Parts(tmp_path)
    seen: list[int] = []

    async def go() -> None:
        for n in range(3):
            parts.meter.finish(parts.request(n))

        def read() -> None:
            parts.meter.sync()
            seen.append(len(parts.stored))

        reader = threading.Thread(target=read)
        reader.start()
        while reader.is_alive():  # keep the loop turning, as the gateway's does
            await asyncio.sleep(0.01)

    asyncio.run(go())
    assert seen == [3]
    assert parts.requests_counted() == 3
    parts.writer.close()


def test_without_an_event_loop_a_request_is_accounted_at_once(tmp_path: Path) -> None:
    parts = _Parts(tmp_path)
    parts.meter.finish(parts.request(1))
    assert parts.requests_counted() == 1
    parts.meter.sync()
    assert len(parts.stored) == 1
    parts.writer.close()


def test_finishing_twice_accounts_once(tmp_path: Path) -> None:
    parts = _Parts(tmp_path)
    ex = parts.request(1)
    parts.meter.finish(ex)
    parts.meter.finish(ex)
    parts.meter.sync()
    assert len(parts.stored) == 1
    assert parts.ledger.snapshot("tenant:team")["tokens_today"] == 14
    parts.writer.close()


def test_a_timer_left_on_a_closed_loop_does_not_hold_records_back(tmp_path: Path) -> None:
    parts = _Parts(tmp_path)

    async def finish(n: int) -> None:
        parts.meter.finish(parts.request(n))

    asyncio.run(finish(1))  # its loop closes before the timer fires

    async def finish_and_wait() -> None:
        await finish(2)
        await asyncio.sleep(_meter.ACCOUNT_AFTER_S * 10)

    asyncio.run(finish_and_wait())
    assert parts.requests_counted() == 2
    parts.writer.close()


def test_replicas_on_one_gpu_split_its_energy_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    joules = {"cuda:0": 0.0, "cuda:1": 0.0}
    monkeypatch.setattr(_meter, "nvml_energy_reader", lambda device: lambda: joules[device])
    meter = _Parts(tmp_path).meter
    a, b, c = (
        ReplicaSpec(model=m, engine="transformers", device=d, model_path="/m", index=i)
        for m, d, i in (("chat", "cuda:0", 0), ("chat", "cuda:0", 1), ("other", "cuda:1", 0))
    )
    on_a, on_b, on_c = (meter.share_meter(s).begin() for s in (a, b, c))
    joules["cuda:0"] += 7200.0  # 2 Wh on the device both replicas share
    shares = [meter.share_meter(s).end(t) for s, t in ((a, on_a), (b, on_b), (c, on_c))]
    assert [s.energy_source for s in shares] == ["measured"] * 3
    assert [s.energy_wh for s in shares] == pytest.approx([1.0, 1.0, 0.0])
    cpu0, cpu1 = (
        ReplicaSpec(model="small", engine="transformers", device="cpu", model_path="/m", index=i)
        for i in (0, 1)
    )
    assert meter.share_meter(cpu0) is not meter.share_meter(cpu1)  # each has its own cores


def test_a_new_price_applies_to_new_requests_and_the_replicas_time_runs_on(
    tmp_path: Path,
) -> None:
    parts = _Parts(tmp_path)
    meter = parts.meter
    repriced = ReplicaSpec(
        model="chat",
        engine="transformers",
        device="cpu",
        model_path="/m",
        options=(("price_input_per_mtok", 4.0), ("power_w", 100.0)),
    )
    share = meter.share_meter(SPEC)
    before = share.begin()  # in flight while the price changes (the worker runs on)
    assert meter.share_meter(repriced) is share and share.power_w == 100.0
    assert meter.pricing(repriced).cost(1_000_000, 0, 0.0) == 4.0
    after = share.begin()
    assert share.end(before).device_s >= share.end(after).device_s >= 0.0
    assert meter.pricing(SPEC).cost(1_000_000, 0, 0.0) == 2.0  # what it was admitted at


def test_in_flight_and_queued_requests_by_model(tmp_path: Path) -> None:
    parts = _Parts(tmp_path)

    def gauges() -> dict[str, float]:
        text = generate_latest(parts.meter.metrics.registry).decode()
        return {
            s.name + str(sorted(s.labels.values())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name.startswith(("zhisuan_requests_", "zhisuan_replica_requests"))
            and not s.name.startswith("zhisuan_requests_total")
        }

    first, second = (
        Exchange(request_id=f"q{n}", endpoint="chat.completions", model="chat") for n in (1, 2)
    )
    parts.meter.begin(first)
    parts.meter.begin(second)
    assert gauges() == {"zhisuan_requests_in_flight['chat']": 2}  # no replica asked yet
    # what the replicas' workers said at the scrape's poll: queued is what waits in them
    parts.meter.metrics.load.update({("chat", "0"): (1, 3), ("chat", "1"): (2, 0)})
    assert gauges() == {
        "zhisuan_requests_in_flight['chat']": 2,
        "zhisuan_requests_queued['chat']": 3,
        "zhisuan_replica_requests['0', 'chat', 'running']": 1,
        "zhisuan_replica_requests['0', 'chat', 'waiting']": 3,
        "zhisuan_replica_requests['1', 'chat', 'running']": 2,
        "zhisuan_replica_requests['1', 'chat', 'waiting']": 0,
    }
    first.close("ok", 200)
    parts.meter.finish(first)
    assert gauges()["zhisuan_requests_in_flight['chat']"] == 1


def test_an_explicit_0_is_a_price_and_a_power_not_a_default() -> None:
    settings = Settings(device_cost_per_hour=2.0, cpu_power_w=65.0)

    def spec(**options: float) -> ReplicaSpec:
        return ReplicaSpec("m", "transformers", "cpu", "/m", options=tuple(options.items()))

    free = _meter.pricing_of(spec(cost_per_hour=0.0), settings)
    assert free.cost_per_hour == 0.0 and not free.by_device_time
    assert free.cost(0, 0, 3600.0) == 0.0
    assert _meter.pricing_of(spec(), settings).cost_per_hour == 2.0  # unset: the setting's
    assert _meter.power_of(spec(power_w=0.0), settings) == 0.0
    assert _meter.power_of(spec(), settings) == 65.0


def test_an_upstream_deployment_counts_energy_only_at_the_power_it_states() -> None:
    settings = Settings(cpu_power_w=65.0)
    remote = ReplicaSpec("m", "upstream", "cpu", None)
    assert _meter.power_of(remote, settings) == 0.0  # not the local CPU's 65 W
    stated = ReplicaSpec("m", "upstream", "cpu", None, options=(("power_w", 300.0),))
    assert _meter.power_of(stated, settings) == 300.0
