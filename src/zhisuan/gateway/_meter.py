"""Metering: one usage record per request, with tokens, latency, cost and energy.

The proxy calls :meth:`Meter.start` when a replica is picked and :meth:`Meter.finish`
exactly once when the request ends, however it ends. ``finish`` journals the usage
record at once (it is durable on return, before the client sees the end of its answer);
settling the quota reservation and updating the Prometheus metrics wait for the event
loop's next turn, after the answer's last bytes are written, since nothing the client
is waiting for depends on them.

Cost: a deployment priced per million input/output tokens (options
``price_input_per_mtok`` / ``price_output_per_mtok``) is billed by tokens; otherwise the
device's hourly cost (``cost_per_hour``) times the request's share of the replica's busy
time. Energy: NVML's counter where there is one (``measured``), else power × busy share
(``estimated``; ``power_w`` option or the settings' CPU/GPU default).
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from zhisuan.cluster import Replica, ReplicaSpec
from zhisuan.gateway._exchange import Exchange
from zhisuan.gateway._metrics import Metrics
from zhisuan.gateway._quota import QuotaLedger
from zhisuan.gateway._share import ShareMeter, nvml_energy_reader
from zhisuan.gateway._writer import UsageWriter
from zhisuan.settings import Settings


@dataclass(frozen=True, slots=True)
class Pricing:
    """How a replica's requests are charged."""

    price_input_per_mtok: float | None
    price_output_per_mtok: float | None
    cost_per_hour: float
    currency: str

    def cost(self, prompt_tokens: int, completion_tokens: int, device_s: float) -> float:
        if self.price_input_per_mtok is not None or self.price_output_per_mtok is not None:
            return (
                prompt_tokens * (self.price_input_per_mtok or 0.0)
                + completion_tokens * (self.price_output_per_mtok or 0.0)
            ) / 1e6
        return self.cost_per_hour * device_s / 3600.0

    def worst_case(self, prompt_tokens: int, completion_tokens: int) -> float:
        """Upper bound of a token-priced request; 0 when priced by device time."""
        return self.cost(prompt_tokens, completion_tokens, 0.0)


def pricing_of(spec: ReplicaSpec, settings: Settings) -> Pricing:
    opts = dict(spec.options)
    return Pricing(
        price_input_per_mtok=_float(opts.get("price_input_per_mtok")),
        price_output_per_mtok=_float(opts.get("price_output_per_mtok")),
        cost_per_hour=_float(opts.get("cost_per_hour")) or settings.device_cost_per_hour,
        currency=str(opts.get("currency") or settings.currency),
    )


def power_of(spec: ReplicaSpec, settings: Settings) -> float:
    opts = dict(spec.options)
    default = settings.gpu_power_w if spec.device.startswith("cuda") else settings.cpu_power_w
    return _float(opts.get("power_w")) or default


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
        self._replicas: dict[str, tuple[ReplicaSpec, ShareMeter, Pricing]] = {}
        self._children: dict[tuple[MetricWrapperBase, tuple[str, ...]], Any] = {}
        self._live: dict[str, Exchange] = {}
        metrics.registry.register(_LiveCollector(self._live))

    def _replica(self, spec: ReplicaSpec) -> tuple[ReplicaSpec, ShareMeter, Pricing]:
        """The replica's integrator and pricing, rebuilt when its spec changes."""
        held = self._replicas.get(spec.key)
        if held is None or (held[0] is not spec and held[0] != spec):
            share = ShareMeter(power_of(spec, self._settings), nvml_energy_reader(spec.device))
            held = (spec, share, pricing_of(spec, self._settings))
            self._replicas[spec.key] = held
        return held

    def share_meter(self, spec: ReplicaSpec) -> ShareMeter:
        return self._replica(spec)[1]

    def pricing(self, spec: ReplicaSpec) -> Pricing:
        return self._replica(spec)[2]

    def begin(self, ex: Exchange) -> None:
        """The request is admitted (counts as in flight and queued until its first token)."""
        self._live[ex.request_id] = ex

    def start(self, ex: Exchange, replica: Replica) -> None:
        """A replica was picked for the request."""
        ex.context["spec"] = replica.spec
        ex.context["ticket"] = self.share_meter(replica.spec).begin()

    def abandon(self, ex: Exchange) -> None:
        """The picked replica could not be reached; forget its share."""
        spec: ReplicaSpec | None = ex.context.pop("spec", None)
        if spec is not None:
            self.share_meter(spec).end(ex.context.pop("ticket"))

    def sync(self) -> None:
        """Wait until every usage record so far is in the store (blocking; for readers)."""
        if self._writer is not None:
            self._writer.sync()

    def finish(self, ex: Exchange) -> None:
        """Account for the finished request once; its record is durable on return."""
        if ex.context.get("metered"):
            return
        ex.context["metered"] = True
        if ex.finished_at is None:
            ex.close()
        self._live.pop(ex.request_id, None)
        spec: ReplicaSpec | None = ex.context.get("spec")
        device_s, energy_wh, source, cost = 0.0, 0.0, "estimated", 0.0
        currency = self._settings.currency
        if spec is not None:
            share = self.share_meter(spec).end(ex.context["ticket"])
            device_s, energy_wh, source = share.device_s, share.energy_wh, share.energy_source
            pricing = self.pricing(spec)
            cost = pricing.cost(ex.prompt_tokens, ex.completion_tokens, device_s)
            currency = pricing.currency
        tenant = str(ex.context.get("tenant") or "anonymous")
        account = functools.partial(self._account, ex, tenant, cost, currency, energy_wh, source)
        try:
            asyncio.get_running_loop().call_soon(account)
        except RuntimeError:  # no event loop: a direct caller
            account()
        if self._writer is None:
            return
        self._writer.submit(
            {
                "request_id": ex.request_id or uuid.uuid4().hex,
                "created_at": datetime.now(UTC).isoformat(),
                "tenant": tenant,
                "key_prefix": ex.context.get("key_prefix"),
                "model": ex.model,
                "replica": ex.replica,
                "endpoint": ex.endpoint,
                "stream": ex.stream,
                "status": ex.status,
                "http_status": ex.http_status,
                "prompt_tokens": ex.prompt_tokens,
                "completion_tokens": ex.completion_tokens,
                "ttft_ms": _ms(ex.ttft_s),
                "tpot_ms": _ms(ex.tpot_s),
                "latency_ms": ex.latency_s * 1000.0,
                "cost": cost,
                "currency": currency,
                "device_s": device_s,
                "energy_wh": energy_wh,
                "energy_source": source,
                "error": (ex.error or None) and str(ex.error)[:500],
            }
        )

    def _account(
        self, ex: Exchange, tenant: str, cost: float, currency: str, energy_wh: float, source: str
    ) -> None:
        """Settle the quota reservation and update the metrics of a finished request."""
        reservation = ex.context.get("reservation")
        if reservation is not None and self._ledger is not None:
            self._ledger.settle(reservation, ex.prompt_tokens + ex.completion_tokens, cost)
        m, child = self.metrics, self._child
        child(m.requests, ex.model, tenant, ex.status).inc()
        child(m.tokens, ex.model, tenant, "in").inc(ex.prompt_tokens)
        child(m.tokens, ex.model, tenant, "out").inc(ex.completion_tokens)
        child(m.latency, ex.model).observe(ex.latency_s)
        if ex.ttft_s is not None and ex.status == "ok":
            child(m.ttft, ex.model).observe(ex.ttft_s)
        if ex.tpot_s is not None and ex.status == "ok":
            child(m.tpot, ex.model).observe(ex.tpot_s)
        if cost:
            child(m.cost, tenant, ex.model, currency).inc(cost)
        if energy_wh:
            child(m.energy, ex.model, source).inc(energy_wh)

    def _child(self, metric: MetricWrapperBase, *labels: str) -> Any:
        """``metric.labels(*labels)``, kept: the lookup costs more than the update."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


class _LiveCollector(Collector):
    """In-flight and queued (no first token yet) requests per model, at scrape time."""

    def __init__(self, live: dict[str, Exchange]) -> None:
        self._live = live

    def collect(self) -> Iterable[Metric]:
        in_flight = GaugeMetricFamily(
            "zhisuan_requests_in_flight", "Requests admitted and not finished.", labels=["model"]
        )
        queued = GaugeMetricFamily(
            "zhisuan_requests_queued",
            "Requests in flight that have no first token yet.",
            labels=["model"],
        )
        counts: dict[str, list[int]] = {}
        for ex in list(self._live.values()):
            c = counts.setdefault(ex.model, [0, 0])
            c[0] += 1
            c[1] += ex.first_token_at is None
        for model, (n, q) in sorted(counts.items()):
            in_flight.add_metric([model], n)
            queued.add_metric([model], q)
        yield in_flight
        yield queued

    def describe(self) -> Iterable[Metric]:
        return []
