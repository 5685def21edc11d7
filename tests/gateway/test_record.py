"""The usage record's journal line, encoded in two parts, reads back as the store's dict."""

from __future__ import annotations

import json
import math
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from zhisuan.gateway._exchange import Exchange
from zhisuan.gateway._record import Ends, fields, head, line, record
from zhisuan.gateway._serving import _REQUEST_IDS
from zhisuan.store.journal import UsageJournal, derive, replay

TOKEN_PRICED = (0.5, 1.5, 2.0, 300.0)
HOURLY = (None, None, 3.6, 300.0)


def _exchange(error: str | None = None, first_token: bool = True) -> Exchange:
    ex = Exchange(request_id="req-1", endpoint="chat.completions", model='m"odel\\1', stream=True)
    ex.replica = "m#0"
    ex.context["key_prefix"] = "zs-abc"
    ex.prompt_tokens, ex.completion_tokens = 12, 5
    ex.started -= 0.02
    if first_token:
        ex.first_token_at = ex.started + 0.004
    ex.error = error
    ex.close("error" if error else "ok", 503 if error else 200)
    return ex


@pytest.mark.parametrize(
    ("error", "first_token"),
    [(None, True), ('worker said "no"\nand ünïcode \u2028 too', True), (None, False)],
)
def test_the_line_reads_back_as_the_record(error: str | None, first_token: bool) -> None:
    ex = _exchange(error, first_token)
    known = fields(ex, "team-a", "CNY", TOKEN_PRICED)
    ends = Ends(created_ns=time.time_ns(), device_ns=12_300_000, energy_mj=None)
    read = derive(json.loads(line(head(known), ex, ends)))
    stored: dict[str, Any] = record(known, ex, ends)
    assert read == stored
    assert stored["created_at"] == datetime.fromtimestamp(ends.created_ns / 1e9, UTC)
    assert read["model"] == 'm"odel\\1' and read["error"] == error
    assert (read["ttft_ms"] is None) == (not first_token)
    assert read["tpot_ms"] is None or read["tpot_ms"] > 0
    assert math.isclose(read["latency_ms"], ex.latency_s * 1000.0, abs_tol=1e-3)
    assert read["cost"] == pytest.approx((12 * 0.5 + 5 * 1.5) / 1e6)  # priced by tokens
    assert read["energy_wh"] == pytest.approx(0.0123 * 300.0 / 3600.0)  # device time x power
    assert (read["device_s"], read["energy_source"]) == (0.0123, "estimated")
    assert not {"rates", "t", "ttft_us", "latency_us", "device_ns", "energy_mj"} & set(read)


def test_a_head_is_its_own_requests_in_every_field() -> None:
    """The part of a head all but the request id make is encoded once and kept: another
    request, tenant, key, model, replica, endpoint, mode, currency or rate gets its own."""
    ex = _exchange()
    base = fields(ex, "team-a", "CNY", TOKEN_PRICED)
    changes: list[dict[str, Any]] = [
        {"request_id": "req-2"},
        {"tenant": "team-b"},
        {"key_prefix": None},
        {"model": "other"},
        {"replica": "m#1"},
        {"endpoint": "completions"},
        {"stream": False},
        {"currency": "USD"},
        *({"rates": [*TOKEN_PRICED[:i], 9.0, *TOKEN_PRICED[i + 1 :]]} for i in range(4)),
        {"rates": list(HOURLY)},
    ]
    assert {name for change in changes for name in change} == set(base)  # every field
    assert json.loads(head(base) + "}") == base
    for change in changes:
        known = {**base, **change}
        assert json.loads(head(known) + "}") == known, change
        assert json.loads(head(base) + "}") == base, change  # and the first one's is intact
    assert head(base).startswith('{"request_id":"req-1",')


def test_hourly_cost_measured_energy_and_tpot_are_derived_alike() -> None:
    ex = _exchange()
    ex.started, ex.first_token_at, ex.finished_at = 10.0, 10.004, 10.020  # 4 more tokens in 16 ms
    ends = Ends(created_ns=1_700_000_000_500_000_000, device_ns=2_000_000_000, energy_mj=7200)
    stored = record(fields(ex, "team-a", "USD", HOURLY), ex, ends)
    assert stored["cost"] == pytest.approx(3.6 * 2.0 / 3600.0)
    assert (stored["energy_wh"], stored["energy_source"]) == (pytest.approx(0.002), "measured")
    assert (stored["ttft_ms"], stored["latency_ms"]) == (4.0, 20.0)
    assert stored["tpot_ms"] == pytest.approx(4.0)


def test_a_journal_of_such_lines_replays_with_its_times(tmp_path: Path) -> None:
    ex = _exchange()
    known = fields(ex, "team-a", "USD", HOURLY)
    ends = Ends(created_ns=1_700_000_000_500_000_000, device_ns=1_000_000_000, energy_mj=900)
    journal = UsageJournal(tmp_path)
    journal.append_line(line(head(known), ex, ends))
    old = {**record(known, ex, ends), "request_id": "req-old", "created_at": 1_700_000_001.25}
    journal.append_line((json.dumps(old) + "\n").encode())  # a line of the earlier form
    journal._fd, fd = -1, journal._fd  # as a killed gateway leaves it: file and lock kept
    stored: list[dict[str, Any]] = []
    try:
        replay(tmp_path, lambda batch: stored.extend(batch) or len(stored), live=True)
    finally:
        os.close(fd)
    assert [r["request_id"] for r in stored] == ["req-1", "req-old"]
    assert stored[0] == record(known, ex, ends)
    assert stored[0]["created_at"] == datetime.fromtimestamp(1_700_000_000.5, UTC)
    assert stored[0]["energy_source"] == "measured" and stored[0]["cost"] == 0.001
    assert stored[1]["created_at"] == datetime.fromtimestamp(1_700_000_001.25, UTC)


def test_request_ids_share_the_process_part_and_never_repeat() -> None:
    ids = [next(_REQUEST_IDS) for _ in range(3)]
    assert len(set(ids)) == 3
    assert len({i[:-8] for i in ids}) == 1  # one random part per process, then a counter
