"""The gateway's own counters and histograms, as Prometheus reads them."""

from __future__ import annotations

from dataclasses import replace

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from zhisuan.cluster import Replica, ReplicaSpec, ReplicaState
from zhisuan.gateway._exchange import Exchange
from zhisuan.gateway._metrics import LATENCY_BUCKETS, Histogram, Metrics


class _NoReplicas:
    def replicas(self, model: str | None = None) -> list[Replica]:
        return []


def test_a_value_on_a_bound_counts_in_that_bucket() -> None:
    h = Histogram((0.1, 1.0))
    for value in (0.1, 0.5, 1.0, 7.0):
        h.observe(value)
    assert h.cumulative() == [("0.1", 1.0), ("1.0", 3.0), ("+Inf", 4.0)]
    assert h.total == 8.6


def test_requests_are_exposed_by_model_tenant_and_status() -> None:
    metrics = Metrics(_NoReplicas())  # type: ignore[arg-type]
    for status, latency in (("ok", 0.02), ("ok", 0.2), ("error", 0.003)):
        ex = Exchange(request_id="r", endpoint="chat.completions", model="chat")
        ex.prompt_tokens, ex.completion_tokens = 10, 4
        ex.first_token_at = ex.started + latency / 2
        ex.close(status)
        ex.finished_at = ex.started + latency
        metrics.add(ex, "team", 0.001, "USD", 0.5, "estimated")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        for s in family.samples
    }
    team = (("model", "chat"), ("status", "ok"), ("tenant", "team"))
    assert samples[("zhisuan_requests_total", team)] == 2
    out = (("direction", "out"), ("model", "chat"), ("tenant", "team"))
    assert samples[("zhisuan_tokens_total", out)] == 12
    latency = "zhisuan_request_latency_seconds"
    assert samples[(f"{latency}_count", (("model", "chat"),))] == 3
    assert samples[(f"{latency}_bucket", (("le", "0.005"), ("model", "chat")))] == 1
    assert samples[(f"{latency}_bucket", (("le", "0.025"), ("model", "chat")))] == 2
    assert len(LATENCY_BUCKETS) + 1 == sum(1 for name, _ in samples if name == f"{latency}_bucket")
    # TTFT is observed for successful requests only
    assert samples[("zhisuan_ttft_seconds_count", (("model", "chat"),))] == 2
    # TPOT: (latency - ttft) / (completion tokens - 1) of the successful requests
    assert samples[("zhisuan_tpot_seconds_count", (("model", "chat"),))] == 2
    assert abs(samples[("zhisuan_tpot_seconds_sum", (("model", "chat"),))] - 0.11 / 3) < 1e-9
    cost = (("currency", "USD"), ("model", "chat"), ("tenant", "team"))
    assert abs(samples[("zhisuan_cost_total", cost)] - 0.003) < 1e-12
    assert samples[("zhisuan_energy_wh_total", (("model", "chat"), ("source", "estimated")))] == 1.5


def test_replicas_up_and_restarts() -> None:
    spec = ReplicaSpec(model="chat", engine="transformers", device="cpu", model_path=None)
    ready = Replica(spec, state=ReplicaState.READY, restarts=2)
    again = Replica(replace(spec, index=1), state=ReplicaState.RESTARTING, restarts=5)

    class Backend:
        def replicas(self, model: str | None = None) -> list[Replica]:
            return [ready, again]

    text = generate_latest(Metrics(Backend()).registry).decode()  # type: ignore[arg-type]
    samples = {
        (s.name, s.labels["replica"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("zhisuan_replica_")
    }
    assert samples == {
        ("zhisuan_replica_up", "0"): 1.0,
        ("zhisuan_replica_up", "1"): 0.0,
        ("zhisuan_replica_restarts_total", "0"): 2.0,
        ("zhisuan_replica_restarts_total", "1"): 5.0,
    }
