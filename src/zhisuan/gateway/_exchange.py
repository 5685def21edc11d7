"""One proxied request's record, filled in as it passes through the gateway."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Exchange:
    """What happened to one request (the raw material of a usage record).

    Attributes:
        request_id: the gateway's id for the request (also sent to the worker).
        endpoint: ``chat.completions``, ``completions`` or ``embeddings``.
        model: requested model name.
        replica: ``model#index`` that served it, when one was picked.
        stream: whether the client asked for a stream.
        status: ``ok``, ``error``, ``client_abort``, ``worker_error`` or ``rejected``.
        http_status: status sent to the client.
        prompt_tokens / completion_tokens: as the model's tokenizer counted them.
        ttft_s: seconds from arrival to the first token: a stream's first content event;
            a whole answer's, counted back from its arrival by the worker's decode time
            (its latency when it has one token; None when nobody timed it).
        latency_s: seconds from arrival to the end.
    """

    request_id: str
    endpoint: str
    model: str
    stream: bool = False
    replica: str | None = None
    status: str = "ok"
    http_status: int = 200
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    finished_at: float | None = None
    context: dict[str, Any] = field(default_factory=dict)

    def mark_first_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()

    def close(self, status: str | None = None, http_status: int | None = None) -> None:
        if status is not None:
            self.status = status
        if http_status is not None:
            self.http_status = http_status
        self.finished_at = time.perf_counter()

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started

    @property
    def latency_s(self) -> float:
        end = self.finished_at if self.finished_at is not None else time.perf_counter()
        return end - self.started

    @property
    def tpot_s(self) -> float | None:
        """Mean seconds per output token after the first."""
        if self.first_token_at is None or self.completion_tokens < 2:
            return None
        end = self.finished_at or time.perf_counter()
        return (end - self.first_token_at) / (self.completion_tokens - 1)
