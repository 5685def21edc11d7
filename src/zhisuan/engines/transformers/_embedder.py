"""Embedding requests on the engine's one thread: batched across requests, the tenants taking
turns.

Requests wait in a :class:`~zhisuan.engines._turns.TurnQueue`. Whenever the thread is free it
takes the waiting requests in turn, whole, until the next would take the pass past
``batch_size`` texts (one request at least, however many texts it has), tokenizes them
together, and embeds their texts in forward passes of ``batch_size`` rows, the texts sorted
by length so that short texts are not padded to a long one's length. Many small requests at
once (one sentence each, say) then share passes instead of taking one each; a tenant that
sends many still waits its turn. A request with a text longer than the model's limit fails
alone; the others of its pass are embedded.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from zhisuan.engines._turns import TurnQueue
from zhisuan.engines.transformers._embed import PoolingSpec, pool
from zhisuan.errors import ContextLengthExceeded, EngineUnavailable

Result = tuple[list[list[float]], int]
"""A request's vectors, one per text in order, and the tokens its texts took."""


@dataclass(slots=True, eq=False)  # a job is itself: found in its line by identity
class _Job:
    texts: list[str]
    future: asyncio.Future[Result]


class Embedder:
    """The embedding side of a transformers engine.

    Args:
        model: an ``AutoModel`` whose output has ``last_hidden_state``.
        tokenizer: its tokenizer (right padding is done here, by hand).
        device: where the model is.
        pooling: how token states become one vector.
        pad_id: the id padded rows are filled with.
        limit: the longest text in tokens.
        batch_size: rows per forward pass, and texts per group of requests.
        fair: False: requests are taken in arrival order.
        group: False: one request per pass group (for measuring what grouping gains).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        device: torch.device,
        pooling: PoolingSpec,
        *,
        pad_id: int,
        limit: int,
        batch_size: int = 32,
        fair: bool = True,
        group: bool = True,
    ) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self._device = device
        self._pooling = pooling
        self._pad_id = pad_id
        self._limit = limit
        self._batch = max(1, batch_size)
        self._group = group
        self._waiting: TurnQueue[_Job] = TurnQueue(fair)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zhisuan-embed")
        self._closed = False
        self.active = 0
        """Requests whose texts are being embedded now."""
        self.busy_s = 0.0
        """Seconds the thread spent in forward passes."""
        self.passes = 0
        """Forward passes run."""
        self.finished = 0
        """Requests answered (embedded or refused)."""

    @property
    def waiting(self) -> int:
        """Requests waiting for the thread."""
        return len(self._waiting)

    async def embed(self, texts: list[str], tenant: str) -> Result:
        """Embed ``texts`` when ``tenant``'s turn comes.

        Raises:
            ContextLengthExceeded: a text is longer than the limit (``param="input"``).
            EngineUnavailable: the engine is closing.
        """
        if self._closed:
            raise EngineUnavailable("the embedding engine is shutting down")
        loop = asyncio.get_running_loop()
        job = _Job(list(texts), loop.create_future())
        self._waiting.append(tenant, job)
        self._next(loop)
        try:
            return await job.future
        except asyncio.CancelledError:  # its client left: out of the line if still in it
            self._waiting.remove(tenant, job)
            raise

    async def close(self) -> None:
        """Fail what waits, and wait for the pass on the thread to end."""
        self._closed = True
        for job in self._waiting.drain():
            if not job.future.done():
                job.future.set_exception(EngineUnavailable("the embedding engine shut down"))
        await asyncio.to_thread(self._executor.shutdown, True)

    def _next(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.active or self._closed:
            return
        jobs = self._take()
        if not jobs:
            return
        self.active = len(jobs)
        work = loop.run_in_executor(self._executor, self._run, [j.texts for j in jobs])
        work.add_done_callback(lambda done: self._finish(loop, jobs, done))

    def _take(self) -> list[_Job]:
        """The next group: whole requests in turn, up to the batch's texts (one at least)."""
        jobs: list[_Job] = []
        texts = 0
        while len(self._waiting):
            job = self._waiting.peek()
            if job.future.done():  # its client left while it waited
                self._waiting.popleft()
                continue
            if jobs and (not self._group or texts + len(job.texts) > self._batch):
                break
            jobs.append(self._waiting.popleft())
            texts += len(job.texts)
        return jobs

    def _finish(
        self,
        loop: asyncio.AbstractEventLoop,
        jobs: list[_Job],
        done: asyncio.Future[list[Result | Exception]],
    ) -> None:
        self.active = 0
        self.finished += len(jobs)
        try:
            results: list[Result | Exception] = done.result()
        except Exception as exc:  # the pass itself failed: every request of it
            results = [exc] * len(jobs)
        for job, result in zip(jobs, results, strict=True):
            if job.future.done():
                continue
            if isinstance(result, Exception):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)
        self._next(loop)

    # -- on the thread ---------------------------------------------------------------------

    def _run(self, groups: list[list[str]]) -> list[Result | Exception]:
        # No ``padding=True``: that would switch the Rust tokenizer's padding state, and a
        # concurrent ``count_tokens`` on the event loop thread would then hit
        # "Already borrowed". We pad by hand instead.
        encoded = self._tokenizer([text for texts in groups for text in texts])
        lengths = [len(ids) for ids in encoded["input_ids"]]
        spans: list[tuple[int, int, int] | Exception] = []  # (first row, rows, tokens)
        rows: list[int] = []
        at = 0
        for texts in groups:
            own = lengths[at : at + len(texts)]
            if max(own, default=0) > self._limit:
                err = ContextLengthExceeded(prompt_tokens=max(own), limit=self._limit)
                err.param = "input"
                spans.append(err)
            else:
                spans.append((len(rows), len(texts), sum(own)))
                rows.extend(range(at, at + len(texts)))
            at += len(texts)
        vectors = self._forward(encoded, rows, lengths)
        return [
            span if isinstance(span, Exception) else (vectors[span[0] : span[0] + span[1]], span[2])
            for span in spans
        ]

    def _forward(self, encoded: Any, rows: list[int], lengths: list[int]) -> list[list[float]]:
        """The vectors of ``rows`` (indices into ``encoded``), in their order."""
        out: list[list[float]] = [[] for _ in rows]
        order = sorted(range(len(rows)), key=lambda i: lengths[rows[i]])
        start = time.perf_counter()
        try:
            with torch.inference_mode():
                for i in range(0, len(order), self._batch):
                    chunk = order[i : i + self._batch]
                    batch = {
                        key: _pad_right(
                            [values[rows[j]] for j in chunk],
                            self._pad_id if key == "input_ids" else 0,
                        ).to(self._device)
                        for key, values in encoded.items()
                    }
                    hidden = self._model(**batch).last_hidden_state  # (B, T, H)
                    self.passes += 1
                    vectors = pool(hidden, batch["attention_mask"], self._pooling).cpu().tolist()
                    for j, vector in zip(chunk, vectors, strict=True):
                        out[j] = vector
        finally:
            self.busy_s += time.perf_counter() - start
        return out


def _pad_right(rows: list[list[int]], pad: int) -> Any:
    """``(B, T)`` long tensor of ``rows`` right-padded with ``pad``."""
    width = max(len(r) for r in rows)
    return torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long)
