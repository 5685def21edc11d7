"""A request's usage record, as the journal line and as the store's dict.

The journal line is written before the client sees the end of its answer, so it is on
every request's critical path. The fields known once a replica is picked are encoded
while the replica works (:func:`head`), and the rest, a few numbers, when the request
ends (:func:`line`). :func:`record` builds the same record as a dict for the store,
after the answer is sent. ``json.loads`` of the line gives that dict back.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from zhisuan.gateway._exchange import Exchange
from zhisuan.store.journal import encode_line

_ENCODER = json.JSONEncoder(separators=(",", ":"))
_string = json.encoder.encode_basestring  # a JSON string literal, quotes included


@dataclass(slots=True)  # not frozen: a frozen class's __init__ costs more, once per request
class Outcome:
    """What is known of a request only when it ends, besides its exchange.

    ``created_at`` is epoch seconds: the journal line carries the number (the replay
    turns it into a datetime) and :func:`record` the datetime.
    """

    created_at: float
    cost: float
    device_s: float
    energy_wh: float


def fields(ex: Exchange, tenant: str, currency: str, energy_source: str) -> dict[str, Any]:
    """The record's fields known once a replica is picked."""
    return {
        "request_id": ex.request_id or uuid.uuid4().hex,
        "tenant": tenant,
        "key_prefix": ex.context.get("key_prefix"),
        "model": ex.model,
        "replica": ex.replica,
        "endpoint": ex.endpoint,
        "stream": ex.stream,
        "currency": currency,
        "energy_source": energy_source,
    }


def head(known: dict[str, Any]) -> str:
    """``known`` encoded as the start of a journal line (a JSON object, not closed)."""
    return _ENCODER.encode(known)[:-1]


def line(start: str, ex: Exchange, out: Outcome) -> bytes:
    """The journal line: ``start`` (from :func:`head`) and the fields known at the end."""
    ttft, tpot, latency = timings(ex)
    if not math.isfinite(latency + out.cost + out.device_s + out.energy_wh + out.created_at):
        return encode_line({**json.loads(start + "}"), **_ends(ex, out)})
    error = ex.error  # the status is one of the gateway's own words: no escaping
    return (
        f'{start},"created_at":{out.created_at!r},"status":"{ex.status}",'
        f'"http_status":{ex.http_status:d},"prompt_tokens":{ex.prompt_tokens:d},'
        f'"completion_tokens":{ex.completion_tokens:d},'
        f'"ttft_ms":{"null" if ttft is None else repr(ttft)},'
        f'"tpot_ms":{"null" if tpot is None else repr(tpot)},"latency_ms":{latency!r},'
        f'"cost":{out.cost!r},"device_s":{out.device_s!r},"energy_wh":{out.energy_wh!r},'
        f'"error":{_string(str(error)[:500]) if error else "null"}}}\n'
    ).encode()


def record(known: dict[str, Any], ex: Exchange, out: Outcome) -> dict[str, Any]:
    """The same record as a dict, for the store."""
    return {**known, **_ends(ex, out), "created_at": datetime.fromtimestamp(out.created_at, UTC)}


def timings(ex: Exchange) -> tuple[float | None, float | None, float]:
    """(TTFT, TPOT, latency) of the exchange, in milliseconds."""
    ttft, tpot = ex.ttft_s, ex.tpot_s
    return (
        None if ttft is None else ttft * 1000.0,
        None if tpot is None else tpot * 1000.0,
        ex.latency_s * 1000.0,
    )


def _ends(ex: Exchange, out: Outcome) -> dict[str, Any]:
    ttft, tpot, latency = timings(ex)
    return {
        "created_at": out.created_at,
        "status": ex.status,
        "http_status": int(ex.http_status),
        "prompt_tokens": int(ex.prompt_tokens),
        "completion_tokens": int(ex.completion_tokens),
        "ttft_ms": ttft,
        "tpot_ms": tpot,
        "latency_ms": latency,
        "cost": out.cost,
        "device_s": out.device_s,
        "energy_wh": out.energy_wh,
        "error": str(ex.error)[:500] if ex.error else None,
    }
