"""Prometheus metrics of one gateway (its own registry, so tests can run several apps)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from zhisuan.cluster import Backend, ReplicaState

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)


class Metrics:
    """Counters, gauges and histograms the gateway updates per request."""

    def __init__(self, backend: Backend) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "zhisuan_requests",
            "Requests by model, tenant and status.",
            ["model", "tenant", "status"],
            registry=r,
        )
        self.tokens = Counter(
            "zhisuan_tokens",
            "Tokens by model, tenant and direction (in = prompt, out = completion).",
            ["model", "tenant", "direction"],
            registry=r,
        )
        self.ttft = Histogram(
            "zhisuan_ttft_seconds",
            "Time to first token.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "zhisuan_tpot_seconds",
            "Time per output token after the first.",
            ["model"],
            buckets=_TPOT_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "zhisuan_request_latency_seconds",
            "Total request latency.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.cost = Counter(
            "zhisuan_cost",
            "Money metered, by tenant, model and currency.",
            ["tenant", "model", "currency"],
            registry=r,
        )
        self.energy = Counter(
            "zhisuan_energy_wh",
            "Energy metered in watt-hours, by model and source.",
            ["model", "source"],
            registry=r,
        )
        r.register(_ReplicaCollector(backend))


class _ReplicaCollector(Collector):
    """Replica up and restarts, read from the backend at scrape time."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "zhisuan_replica_up", "1 when the replica is ready.", labels=["model", "replica"]
        )
        restarts = CounterMetricFamily(
            "zhisuan_replica_restarts",
            "Restarts of the replica's worker.",
            labels=["model", "replica"],
        )
        for rep in self._backend.replicas():
            labels = [rep.spec.model, str(rep.spec.index)]
            up.add_metric(labels, 1.0 if rep.state is ReplicaState.READY else 0.0)
            restarts.add_metric(labels, float(rep.restarts))
        yield up
        yield restarts

    def describe(self) -> Iterable[Metric]:
        return []
