"""A usage record as the gateway hands it to the store, for the store's tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

T0 = datetime(2025, 3, 31, 23, 0, tzinfo=UTC)  # an hour before a day and month boundary


def usage_record(rid: str, **kw: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "request_id": rid,
        "created_at": T0,
        "tenant": "acme",
        "key_prefix": "zs-aaaaaaaaa",
        "model": "qwen",
        "endpoint": "/v1/chat/completions",
        "status": "ok",
        "http_status": 200,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "ttft_ms": 20.0,
        "tpot_ms": 4.0,
        "latency_ms": 40.0,
        "cost": 0.5,
        "energy_wh": 0.01,
        "energy_source": "estimated",
    }
    rec.update(kw)
    return rec
