"""Metering: one usage record per request, with tokens, latency, cost and energy.

The proxy calls :meth:`Meter.start` when a replica is picked, :meth:`Meter.prepare` once
the request is on its way to it, and :meth:`Meter.finish` exactly once when the request
ends, however it ends. ``finish`` journals the usage record (it is durable on return,
before the client sees the end of its answer) and settles the quota reservation, so the
next request is admitted against the actual use. Updating the metrics and queueing the
record for the store wait :data:`ACCOUNT_AFTER_S`, batched: nothing the client waits for
depends on them, and done at once they would keep the gateway's core from the client
that just got its answer, and from its next request, which usually comes sooner (with a
client on the same machine, about 0.07 ms of each request's latency at concurrency 1).
Readers flush them first (:meth:`Meter.flush`, :meth:`Meter.sync`). ``prepare`` encodes
the record's known fields while the replica works, so that at concurrency 1 the
gateway's part of the journal line is a few numbers (see ``_record``).

Cost: a deployment priced per million input/output tokens (options
``price_input_per_mtok`` / ``price_output_per_mtok``) is billed by tokens; otherwise the
device's hourly cost (``cost_per_hour``) times the request's share of the replica's busy
time. Energy: NVML's counter where there is one (``measured``), else power × busy share
(``estimated``; ``power_w`` option or the settings' CPU/GPU default).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from zhisuan.cluster import Replica, ReplicaSpec
from zhisuan.gateway._exchange import Exchange
from zhisuan.gateway._metrics import Metrics
from zhisuan.gateway._quota import QuotaLedger
from zhisuan.gateway._record import Ends, fields, head, line, record
from zhisuan.gateway._share import ShareMeter, nvml_energy_reader
from zhisuan.gateway._writer import UsageWriter
from zhisuan.settings import Settings
from zhisuan.store import ANONYMOUS
from zhisuan.store.journal import Rates, cost_of


@dataclass(frozen=True, slots=True)
class Pricing:
    """How a replica's requests are charged."""

    price_input_per_mtok: float | None
    price_output_per_mtok: float | None
    cost_per_hour: float
    currency: str

    def rates(self, power_w: float) -> Rates:
        return (self.price_input_per_mtok, self.price_output_per_mtok, self.cost_per_hour, power_w)

    def cost(self, prompt_tokens: int, completion_tokens: int, device_s: float) -> float:
        return cost_of(self.rates(0.0), prompt_tokens, completion_tokens, device_s)

    @property
    def by_device_time(self) -> bool:
        """Billed by its share of the device's time, at a price above nothing."""
        no_tokens = self.price_input_per_mtok is None and self.price_output_per_mtok is None
        return no_tokens and self.cost_per_hour > 0

    def worst_case(self, prompt_tokens: int, completion_tokens: int, device_s: float) -> float:
        """The most a request can cost: by its tokens, or by ``device_s`` of the device."""
        return self.cost(prompt_tokens, completion_tokens, device_s)


ACCOUNT_AFTER_S = 0.002
"""How long after a request ends its metrics and store record wait (see the module's doc)."""
_UNPRICED: Rates = (None, None, 0.0, 0.0)
"""The rates of a request no replica took: it costs nothing and used no device."""
Held = tuple[ReplicaSpec, ShareMeter, Pricing]
"""A replica's spec, integrator and pricing, as the meter keeps them (see ``Meter._replica``)."""


def pricing_of(spec: ReplicaSpec, settings: Settings) -> Pricing:
    """The deployment's prices; ``cost_per_hour`` the setting's where it sets none (an
    explicit 0 is free: not billed, and no deadline for budgeted callers)."""
    opts = dict(spec.options)
    cost_per_hour = _float(opts.get("cost_per_hour"))
    return Pricing(
        price_input_per_mtok=_float(opts.get("price_input_per_mtok")),
        price_output_per_mtok=_float(opts.get("price_output_per_mtok")),
        cost_per_hour=settings.device_cost_per_hour if cost_per_hour is None else cost_per_hour,
        currency=str(opts.get("currency") or settings.currency),
    )


def power_of(spec: ReplicaSpec, settings: Settings) -> float:
    """The deployment's ``power_w``, else the setting's for its kind of device (an explicit
    0 counts no estimated energy). An ``upstream`` deployment's device is another server's,
    whose power only its operator knows: none unless the deployment states it."""
    opts = dict(spec.options)
    power = _float(opts.get("power_w"))
    if power is not None:
        return power
    if spec.engine == "upstream":
        return 0.0  # its worker only waits on the network: the local CPU's power is no guide
    return settings.gpu_power_w if spec.device.startswith("cuda") else settings.cpu_power_w


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


class Meter:
    """Per-gateway metering state.

    Args:
        settings: platform settings (defaults for power, price and currency).
        metrics: the Prometheus metrics to update.
        ledger: quota reservations to settle, if quotas are on.
        writer: where usage records go.
    """

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        ledger: QuotaLedger | None,
        writer: UsageWriter | None,
    ) -> None:
        self._settings = settings
        self.metrics = metrics
        self._ledger = ledger
        self._writer = writer
        self._replicas: dict[str, Held] = {}
        self._devices: dict[str, ShareMeter] = {}  # a GPU's by device, a CPU replica's by key
        self._live: dict[str, Exchange] = {}
        self._later: list[tuple[Exchange, dict[str, Any], Ends]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        metrics.registry.register(_LiveCollector(self._live))

    def _replica(self, spec: ReplicaSpec) -> Held:
        """The replica's integrator and pricing, rebuilt when its spec changes."""
        held = self._replicas.get(spec.key)
        if held is None or (held[0] is not spec and held[0] != spec):
            held = (spec, self._share_of(spec), pricing_of(spec, self._settings))
            self._replicas[spec.key] = held
        return held

    def _share_of(self, spec: ReplicaSpec) -> ShareMeter:
        """A CPU replica's own integrator (it has its own cores); a GPU's, shared by its
        replicas: the device's time and energy are split among every request on it,
        whichever replica serves it, and its energy counter is counted once. Either lasts
        as long as the gateway, through a change of the spec (a new price, say) while
        requests are in flight; a new ``power_w`` applies from then on."""
        power = power_of(spec, self._settings)
        gpu = spec.device.startswith("cuda")
        where = spec.device if gpu else spec.key
        share = self._devices.get(where)
        if share is None:
            share = ShareMeter(power, nvml_energy_reader(spec.device) if gpu else None)
            self._devices[where] = share
        share.power_w = power
        return share

    def share_meter(self, spec: ReplicaSpec) -> ShareMeter:
        return self._replica(spec)[1]

    def pricing(self, spec: ReplicaSpec) -> Pricing:
        return self._replica(spec)[2]

    def idle(self) -> bool:
        """Whether no admitted request is in flight."""
        return not self._live

    def begin(self, ex: Exchange) -> None:
        """The request is admitted (counts as in flight and queued until its first token)."""
        self._live[ex.request_id] = ex

    def start(self, ex: Exchange, replica: Replica) -> None:
        """A replica was picked for the request."""
        held = self._replica(replica.spec)
        ex.context["held"] = held  # the replica's meter, once per request
        ex.context["ticket"] = held[1].begin()

    def prepare(self, ex: Exchange) -> None:
        """Encode the fields of the request's record known by now (the proxy calls this
        while the replica works, so the end of the request has less to do)."""
        known = self._known(ex)
        ex.context["head"] = (ex.replica, known, head(known))

    def stop_share(self, ex: Exchange) -> None:
        """The request stops using its replica now (it was ended at its deadline): its
        share of the device's time and energy ends here, not when its record is taken."""
        held: Held | None = ex.context.get("held")
        if held is not None and "share" not in ex.context:
            ex.context["share"] = held[1].end(ex.context["ticket"])

    def abandon(self, ex: Exchange) -> None:
        """The picked replica could not be reached; forget its share."""
        held: Held | None = ex.context.pop("held", None)
        if held is not None:
            held[1].end(ex.context.pop("ticket"))

    def sync(self) -> None:
        """Wait until every usage record so far is in the store (blocking; for readers on
        any thread)."""
        self._flush_from_any_thread()
        if self._writer is not None:
            self._writer.sync()

    def flush(self) -> None:
        """Update the metrics and queue the records of every finished request now (on the
        event loop's thread, or with no loop running)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        later, self._later = self._later, []
        for ex, known, ends in later:
            self._account(ex, known, ends)

    def _flush_later(self) -> None:
        self._timer = None
        self.flush()

    def _flush_from_any_thread(self) -> None:
        loop = self._loop
        if not self._later:
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop or not loop.is_running():
            self.flush()
            return
        done = threading.Event()

        def flush_then_signal() -> None:
            try:
                self.flush()
            finally:
                done.set()

        loop.call_soon_threadsafe(flush_then_signal)
        done.wait(10.0)

    def finish(self, ex: Exchange) -> None:
        """Account for the finished request once; its record is durable on return.

        The journal line is written and the quota reservation settled here; the metrics
        and the record's way to the store wait :data:`ACCOUNT_AFTER_S`.
        """
        if self.journal(ex):
            self.account(ex)

    def journal(self, ex: Exchange) -> bool:
        """The first half of :meth:`finish`: the record durable in the journal, and nothing
        else (the express lane writes the answer then, and :meth:`account` after it).

        Returns:
            False if the request was metered already.
        """
        context = ex.context
        if context.get("metered"):
            return False
        context["metered"] = True
        if ex.finished_at is None:
            ex.close()
        held = context.get("head")
        if held is None or held[0] != ex.replica:
            known = self._known(ex)
            held = (ex.replica, known, head(known))
        ends = self._ends(ex)
        if self._writer is not None:
            self._writer.journal(line(held[2], ex, ends))
        context["journaled"] = (held[1], ends)
        return True

    def account(self, ex: Exchange) -> None:
        """The second half of :meth:`finish`, once (nothing if the request is not journaled):
        its quota reservation settled, and its metrics and store record on their way."""
        journaled = ex.context.pop("journaled", None)
        if journaled is None:
            return
        known, ends = journaled
        self._live.pop(ex.request_id, None)
        reservation = ex.context.get("reservation")
        if reservation is not None and self._ledger is not None:
            tokens = ex.prompt_tokens + ex.completion_tokens
            device_s = ends.device_ns / 1e9  # as the record derives it: the same cost
            cost = cost_of(known["rates"], ex.prompt_tokens, ex.completion_tokens, device_s)
            self._ledger.settle(reservation, tokens, cost)
        self._later.append((ex, known, ends))
        if self._timer is None or self._loop is None or self._loop.is_closed():
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop: a direct caller
                self.flush()
                return
            self._timer = self._loop.call_later(ACCOUNT_AFTER_S, self._flush_later)

    def _known(self, ex: Exchange) -> dict[str, Any]:
        tenant = str(ex.context.get("tenant") or ANONYMOUS)
        held: Held | None = ex.context.get("held")
        if held is None:
            return fields(ex, tenant, self._settings.currency, _UNPRICED)
        _, share, pricing = held
        return fields(ex, tenant, pricing.currency, pricing.rates(share.power_w))

    def _ends(self, ex: Exchange) -> Ends:
        created_ns = time.time_ns()
        held: Held | None = ex.context.get("held")
        if held is None:
            return Ends(created_ns, 0, None)
        share = ex.context.get("share") or held[1].end(ex.context["ticket"])
        energy_mj = None  # estimated from the replica's power when the record is derived
        if share.energy_source == "measured" and math.isfinite(share.energy_wh):
            energy_mj = round(share.energy_wh * 3.6e6)
        device_s = share.device_s
        deadline: float | None = ex.context.get("deadline")
        if deadline is not None and device_s > deadline:
            device_s = deadline  # billed at most the time it reserved (the timer runs late)
        return Ends(created_ns, round(device_s * 1e9), energy_mj)

    def _account(self, ex: Exchange, known: dict[str, Any], ends: Ends) -> None:
        """Update the metrics and queue the record."""
        rec = record(known, ex, ends)
        self.metrics.add(
            ex,
            known["tenant"],
            rec["cost"],
            known["currency"],
            rec["energy_wh"],
            rec["energy_source"],
        )
        if self._writer is not None:
            self._writer.enqueue(rec)


class _LiveCollector(Collector):
    """In-flight requests per model, at scrape time."""

    def __init__(self, live: dict[str, Exchange]) -> None:
        self._live = live

    def collect(self) -> Iterable[Metric]:
        in_flight = GaugeMetricFamily(
            "zhisuan_requests_in_flight", "Requests admitted and not finished.", labels=["model"]
        )
        counts: dict[str, int] = {}
        for ex in list(self._live.values()):
            counts[ex.model] = counts.get(ex.model, 0) + 1
        for model, n in sorted(counts.items()):
            in_flight.add_metric([model], n)
        yield in_flight

    def describe(self) -> Iterable[Metric]:
        return []
