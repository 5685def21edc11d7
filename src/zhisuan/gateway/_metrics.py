"""Prometheus metrics of one gateway (its own registry, so tests can run several apps).

The per-request figures are kept in plain dictionaries and lists and turned into metric
families at scrape time by :class:`_RequestCollector`; ``prometheus_client`` formats
them. Its ``Counter`` and ``Histogram`` take a lock and run several checks per update,
about ten updates per request: on a small machine that CPU is taken from the engines.
Every update happens on the event loop; a scrape copies what it reads first.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import aiohttp
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from zhisuan.cluster import Backend, Drains, ReplicaState
from zhisuan.gateway._exchange import Exchange

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)
_K = TypeVar("_K", bound=tuple[str, ...])
_OUT = (ReplicaState.STOPPING, ReplicaState.DRAINING)
"""States of a worker that takes no new request but finishes those it runs."""


@dataclass(slots=True)
class Histogram:
    """One label set's observations: a count per bucket (not cumulative) and the sum."""

    bounds: tuple[float, ...]
    counts: list[int] = field(init=False)  # one more than bounds: the last one is +Inf
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # le: value <= bound
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        """``(le, count)`` pairs as the exposition format wants them."""
        counts, running, out = list(self.counts), 0, []
        for bound, count in zip((*self.bounds, float("inf")), counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), float(running)))
        return out


class Metrics:
    """Counters and histograms the gateway updates per request, and its registry."""

    def __init__(
        self, backend: Backend, auth_refusals: dict[tuple[str], float] | None = None
    ) -> None:
        """
        Args:
            backend: where the replicas are (read at scrape time).
            auth_refusals: requests refused for their key, by reason (the authenticator's).
        """
        self.registry = CollectorRegistry(auto_describe=True)
        self.auth_refusals = {} if auth_refusals is None else auth_refusals
        self.requests: dict[tuple[str, str, str], float] = {}
        self.tokens: dict[tuple[str, str, str], float] = {}
        self.cost: dict[tuple[str, str, str], float] = {}
        self.energy: dict[tuple[str, str], float] = {}
        self.latency: dict[str, Histogram] = {}
        self.ttft: dict[str, Histogram] = {}
        self.tpot: dict[str, Histogram] = {}
        self.load: dict[tuple[str, str], tuple[int, int]] = {}
        """(model, replica) → (running, waiting) as its worker counted them at the last
        :meth:`poll`."""
        self._backend = backend
        self.registry.register(_RequestCollector(self))
        self.registry.register(_ReplicaCollector(backend, self.load))

    async def poll(self, client: aiohttp.ClientSession, timeout: float = 1.0) -> None:
        """Ask the workers that run requests how many they run and how many wait (``GET
        /health``), for the scrape that follows; one that does not answer in ``timeout``
        seconds is left out. Those are each ready replica's worker and each that finishes
        its requests taking no new one (``stopping``, and ``draining`` where the backend
        :class:`~zhisuan.cluster.Drains`): a draining worker's count under its replica's
        labels, added to its successor's."""
        backend = self._backend
        out = backend.draining() if isinstance(backend, Drains) else []
        ready = [
            r
            for r in [*backend.replicas(), *out]
            if r.endpoint is not None
            and (r.state is ReplicaState.READY or (r.state in _OUT and r.pid is not None))
        ]

        async def ask(endpoint: str) -> tuple[int, int] | None:
            try:
                got = client.get(f"{endpoint}/health", timeout=aiohttp.ClientTimeout(timeout))
                async with got as resp:
                    body = await resp.json() if resp.status == 200 else {}
                return int(body["active"]), int(body["waiting"])
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError):
                return None

        answers = await asyncio.gather(*(ask(str(r.endpoint)) for r in ready))
        self.load.clear()
        for rep, load in zip(ready, answers, strict=True):
            if load is not None:
                key = (rep.spec.model, str(rep.spec.index))
                running, waiting = self.load.get(key, (0, 0))
                self.load[key] = (running + load[0], waiting + load[1])

    def add(
        self, ex: Exchange, tenant: str, cost: float, currency: str, energy_wh: float, source: str
    ) -> None:
        """Count one finished request."""
        model, status = ex.model, ex.status
        requests, tokens = self.requests, self.tokens
        key = (model, tenant, status)
        requests[key] = requests.get(key, 0.0) + 1.0
        key = (model, tenant, "in")
        tokens[key] = tokens.get(key, 0.0) + ex.prompt_tokens
        key = (model, tenant, "out")
        tokens[key] = tokens.get(key, 0.0) + ex.completion_tokens
        _histogram(self.latency, model, LATENCY_BUCKETS).observe(ex.latency_s)
        if status == "ok":
            ttft, tpot = ex.ttft_s, ex.tpot_s
            if ttft is not None:
                _histogram(self.ttft, model, LATENCY_BUCKETS).observe(ttft)
            if tpot is not None:
                _histogram(self.tpot, model, TPOT_BUCKETS).observe(tpot)
        if cost:
            _inc(self.cost, (tenant, model, currency), cost)
        if energy_wh:
            _inc(self.energy, (model, source), energy_wh)


def _inc(counts: dict[_K, float], key: _K, amount: float) -> None:
    counts[key] = counts.get(key, 0.0) + amount


def _histogram(by_model: dict[str, Histogram], model: str, bounds: tuple[float, ...]) -> Histogram:
    h = by_model.get(model)
    if h is None:
        h = by_model[model] = Histogram(bounds)
    return h


class _RequestCollector(Collector):
    """The per-request counters and histograms, at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def collect(self) -> Iterable[Metric]:
        m = self._m
        yield _counter(
            "zhisuan_requests",
            "Requests by model, tenant and status.",
            ["model", "tenant", "status"],
            m.requests,
        )
        yield _counter(
            "zhisuan_tokens",
            "Tokens by model, tenant and direction (in = prompt, out = completion).",
            ["model", "tenant", "direction"],
            m.tokens,
        )
        yield _histograms("zhisuan_ttft_seconds", "Time to first token.", m.ttft)
        yield _histograms("zhisuan_tpot_seconds", "Time per output token after the first.", m.tpot)
        yield _histograms("zhisuan_request_latency_seconds", "Total request latency.", m.latency)
        yield _counter(
            "zhisuan_cost",
            "Money metered, by tenant, model and currency.",
            ["tenant", "model", "currency"],
            m.cost,
        )
        yield _counter(
            "zhisuan_energy_wh",
            "Energy metered in watt-hours, by model and source.",
            ["model", "source"],
            m.energy,
        )
        yield _counter(
            "zhisuan_auth_refusals",
            "Requests refused for their key (no tenant to meter them under), by reason.",
            ["reason"],
            m.auth_refusals,
        )

    def describe(self) -> Iterable[Metric]:
        return []


def _counter(
    name: str, doc: str, labels: list[str], counts: dict[_K, float]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in sorted(list(counts.items())):
        family.add_metric(list(key), value)
    return family


def _histograms(name: str, doc: str, by_model: dict[str, Histogram]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=["model"])
    for model, h in sorted(list(by_model.items())):
        family.add_metric([model], h.cumulative(), sum_value=h.total)
    return family


class _ReplicaCollector(Collector):
    """Replica up and restarts, read from the backend at scrape time, and the requests the
    replicas run and queue, as :meth:`Metrics.poll` found them."""

    def __init__(self, backend: Backend, load: dict[tuple[str, str], tuple[int, int]]) -> None:
        self._backend = backend
        self._load = load

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
        requests = GaugeMetricFamily(
            "zhisuan_replica_requests",
            "Requests a replica runs in its engine's batch and waits to start, as its workers "
            "count them (one still draining included).",
            labels=["model", "replica", "state"],
        )
        queued = GaugeMetricFamily(
            "zhisuan_requests_queued",
            "Requests waiting in the replicas' queues for their engine's batch.",
            labels=["model"],
        )
        waiting: dict[str, int] = {}
        for (model, index), (running, queue) in sorted(self._load.items()):
            requests.add_metric([model, index, "running"], running)
            requests.add_metric([model, index, "waiting"], queue)
            waiting[model] = waiting.get(model, 0) + queue
        for model, n in sorted(waiting.items()):
            queued.add_metric([model], n)
        yield requests
        yield queued

    def describe(self) -> Iterable[Metric]:
        return []


QuotaUse = Callable[[], list[tuple[str, str, float, float]]]
"""The quota ledger's :meth:`~zhisuan.gateway._quota.QuotaLedger.use`."""


class QuotaCollector(Collector):
    """Each limit of each tenant and key in use, and how much of it is used (with what
    requests in flight hold), at scrape time: an alert on ``used / limit`` sees a budget or
    a daily allowance running out before requests are refused."""

    def __init__(self, use: QuotaUse) -> None:
        self._use = use

    def collect(self) -> Iterable[Metric]:
        labels = ["kind", "name", "limit"]
        used = GaugeMetricFamily(
            "zhisuan_quota_used",
            "Use of a tenant's or a key's limit, with what requests in flight hold (money "
            "in the prices' currency).",
            labels=labels,
        )
        allowed = GaugeMetricFamily(
            "zhisuan_quota_limit", "A tenant's or a key's limit.", labels=labels
        )
        for sid, limit, value, cap in self._use():
            kind, _, name = sid.partition(":")
            used.add_metric([kind, name, limit], value)
            allowed.add_metric([kind, name, limit], cap)
        yield used
        yield allowed

    def describe(self) -> Iterable[Metric]:
        return []
