"""A request's usage record, as the journal line and as the store's dict.

The journal line is written before the client sees the end of its answer, so it is on
every request's critical path, and it holds facts rather than figures. The fields known
once a replica is picked, the replica's prices and power among them, are encoded while
the replica works (:func:`head`); when the request ends, :func:`line` adds a few
integers: the clock, tokens, TTFT and latency in microseconds, device time in
nanoseconds, measured energy in millijoules. Cost, energy, TPOT and the times in
milliseconds are derived from those by :func:`zhisuan.store.journal.derive`, after the
answer is sent for the store (:func:`record`) and at replay for a journal a dead gateway
left, so both give the same record.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from zhisuan.gateway._exchange import Exchange
from zhisuan.store.journal import Rates, derive

_ENCODER = json.JSONEncoder(separators=(",", ":"))
_string = json.encoder.encode_basestring  # a JSON string literal, quotes included


@dataclass(slots=True)  # not frozen: a frozen class's __init__ costs more, once per request
class Ends:
    """What is known of a request only when it ends, besides its exchange."""

    created_ns: int
    """Wall clock, epoch nanoseconds."""
    device_ns: int
    """The request's share of its replica's busy time."""
    energy_mj: int | None
    """Its share of the measured energy (None: estimated from the replica's power)."""


def fields(ex: Exchange, tenant: str, currency: str, rates: Rates) -> dict[str, Any]:
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
        "rates": list(rates),
    }


def head(known: dict[str, Any]) -> str:
    """``known`` (from :func:`fields`) encoded as the start of a journal line (a JSON object,
    not closed). All but the request id is the same for a caller's requests to a replica,
    and is encoded once (:data:`_HEADS`)."""
    rest = (
        *[value for name, value in known.items() if name != "request_id" and name != "rates"],
        *known["rates"],
    )
    encoded = _HEADS.get(rest)
    if encoded is None:
        if len(_HEADS) >= _HEADS_KEPT:
            _HEADS.clear()
        others = {name: value for name, value in known.items() if name != "request_id"}
        encoded = _HEADS[rest] = _ENCODER.encode(others)[1:-1]
    return f'{{"request_id":{_string(known["request_id"])},{encoded}'


_HEADS: dict[tuple[Any, ...], str] = {}
"""The encoded fields of :func:`head` but the request id, by their values."""
_HEADS_KEPT = 4096


def line(start: str, ex: Exchange, ends: Ends) -> bytes:
    """The journal line: ``start`` (from :func:`head`) and the facts known at the end."""
    ttft_us, latency_us = times_us(ex)
    error = ex.error  # the status is one of the gateway's own words: no escaping
    mj = ends.energy_mj
    return (
        f'{start},"t":{ends.created_ns:d},"status":"{ex.status}",'
        f'"http_status":{ex.http_status:d},"prompt_tokens":{ex.prompt_tokens:d},'
        f'"completion_tokens":{ex.completion_tokens:d},'
        f'"ttft_us":{"null" if ttft_us is None else ttft_us},"latency_us":{latency_us:d},'
        f'"device_ns":{ends.device_ns:d},"energy_mj":{"null" if mj is None else mj},'
        f'"error":{_string(str(error)[:500]) if error else "null"}}}\n'
    ).encode()


def facts(known: dict[str, Any], ex: Exchange, ends: Ends) -> dict[str, Any]:
    """What :func:`line` writes, as the dict ``json.loads`` reads from it."""
    ttft_us, latency_us = times_us(ex)
    return {
        **known,
        "t": ends.created_ns,
        "status": ex.status,
        "http_status": int(ex.http_status),
        "prompt_tokens": int(ex.prompt_tokens),
        "completion_tokens": int(ex.completion_tokens),
        "ttft_us": ttft_us,
        "latency_us": latency_us,
        "device_ns": ends.device_ns,
        "energy_mj": ends.energy_mj,
        "error": str(ex.error)[:500] if ex.error else None,
    }


def record(known: dict[str, Any], ex: Exchange, ends: Ends) -> dict[str, Any]:
    """The store's record of the request (the same the journal line replays to)."""
    return derive(facts(known, ex, ends))


def times_us(ex: Exchange) -> tuple[int | None, int]:
    """(TTFT, latency) of the exchange, in whole microseconds."""
    started, first = ex.started, ex.first_token_at
    end = ex.finished_at if ex.finished_at is not None else time.perf_counter()
    return (None if first is None else round((first - started) * 1e6)), round((end - started) * 1e6)
