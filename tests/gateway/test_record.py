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
from zhisuan.gateway._record import Outcome, fields, head, line, record
from zhisuan.store.journal import UsageJournal, replay


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
    known = fields(ex, "team-a", "CNY", "estimated")
    out = Outcome(created_at=time.time(), cost=1.25e-05, device_s=0.0123, energy_wh=3.4e-06)
    read = json.loads(line(head(known), ex, out))
    stored: dict[str, Any] = record(known, ex, out)
    assert stored.pop("created_at") == datetime.fromtimestamp(out.created_at, UTC)
    assert read.pop("created_at") == out.created_at
    assert read == stored
    assert read["model"] == 'm"odel\\1' and read["error"] == error
    assert (read["ttft_ms"] is None) == (not first_token)
    assert read["tpot_ms"] is None or read["tpot_ms"] > 0
    assert math.isclose(read["latency_ms"], ex.latency_s * 1000.0)


def test_a_number_json_cannot_spell_still_makes_a_line_json_reads() -> None:
    ex = _exchange()
    known = fields(ex, "team-a", "USD", "estimated")
    out = Outcome(created_at=time.time(), cost=math.inf, device_s=0.0, energy_wh=math.nan)
    read = json.loads(line(head(known), ex, out))
    assert read["cost"] == math.inf and math.isnan(read["energy_wh"])
    assert read["request_id"] == "req-1" and read["completion_tokens"] == 5


def test_a_journal_of_such_lines_replays_with_its_times(tmp_path: Path) -> None:
    ex = _exchange()
    known = fields(ex, "team-a", "USD", "measured")
    out = Outcome(created_at=1_700_000_000.5, cost=0.5, device_s=1.0, energy_wh=0.25)
    journal = UsageJournal(tmp_path)
    journal.append_line(line(head(known), ex, out))
    journal._fd, fd = -1, journal._fd  # as a killed gateway leaves it: file and lock kept
    stored: list[dict[str, Any]] = []
    try:
        replay(tmp_path, lambda batch: stored.extend(batch) or len(stored), live=True)
    finally:
        os.close(fd)
    assert len(stored) == 1
    assert stored[0]["created_at"] == datetime.fromtimestamp(1_700_000_000.5, UTC)
    assert stored[0]["energy_source"] == "measured" and stored[0]["cost"] == 0.5
