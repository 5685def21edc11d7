"""Continuous batching: one scheduler thread, one batched decode pass per iteration.

Every iteration the scheduler

1. drops cancelled sequences (their consumer closed the stream);
2. admits waiting requests up to ``max_batch``, the tenants taking turns
   (:class:`~zhisuan.engines._turns.TurnQueue`), and prefills them together (left
   padded) in one forward pass, sampling each one's first token (a request cancelled
   while it waits leaves the queue at once);
3. appends their KV to the running batch (both sides left-padded to the common length);
4. runs ONE decode forward over all active sequences and samples one token per row,
   each with its own temperature / top-p / generator / penalties (a row whose logits
   give no distribution fails its own request only);
5. detokenizes, checks EOS / stop strings / budget, and retires finished rows at once
   (``index_select`` on the batch dimension, then trims padding columns no row uses).

Layout of the running batch (``B`` rows, ``L`` cache columns): every layer of a
``DynamicCache`` holds keys/values ``(B, kv_heads, L, head_dim)``; ``_mask`` is ``(B, L)``
with 0 on left padding. Each row carries its own position counter, passed explicitly as
``position_ids`` so padding never shifts rotary positions. Results reach asyncio through
``loop.call_soon_threadsafe`` into each request's ``asyncio.Queue``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from zhisuan.engines._greedy import is_greedy
from zhisuan.engines._turns import TurnQueue
from zhisuan.engines.base import Delta, FinishReason
from zhisuan.engines.transformers._detok import StopDetokenizer
from zhisuan.engines.transformers._sampling import Penalties, SamplingError, sample_row

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Sequence:
    """One generation request as the scheduler sees it."""

    request_id: str
    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    generator: Any  # torch.Generator | None
    detok: StopDetokenizer
    eos_ids: frozenset[int]
    ignore_eos: bool
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Delta | BaseException]
    tenant: str = ""  # whose line it waits in (see ``TurnQueue``)
    penalties: Penalties | None = None  # presence / frequency penalties, if any
    generated: list[int] = field(default_factory=list)
    pos: int = 0  # position id of the next token fed to the model
    cancelled: bool = False  # set by the consumer's thread; read by the scheduler
    done: bool = False

    def post(self, item: Delta | BaseException) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the consumer's loop is closed: nobody is listening
            self.cancelled = True


@dataclass(frozen=True, slots=True)
class EngineStats:
    """Counters for ``/health`` and metrics.

    Attributes:
        active: sequences in the running batch.
        waiting: admitted requests not yet in the batch.
        tokens_generated: completion tokens sampled since start.
        busy_seconds: wall time spent in forward passes and sampling since start.
        requests_finished: sequences retired (finished, stopped or cancelled).
        prefills: prefill passes run; each admits the requests that joined the batch in
            one iteration, so requests over prefills is how many joined together (of an
            embedding engine: its forward passes, which requests share).
    """

    active: int
    waiting: int
    tokens_generated: int
    busy_seconds: float
    requests_finished: int
    prefills: int = 0


def cache_keyword(model: Any) -> str:
    """The name of the KV cache's argument of ``model``'s forward pass: ``cache`` from
    transformers 5.25 (which warns on the old name), ``past_key_values`` before."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


class Batcher:
    """The scheduler thread over one causal LM.

    Args:
        model: a loaded ``*ForCausalLM`` in eval mode.
        device: the model's torch device.
        max_batch: most sequences decoded together; more requests wait.
        max_prefill_tokens: prompt tokens (before padding) prefilled in one iteration;
            a single longer prompt is still admitted alone.
        pad_id: token id written into padding (masked out, any valid id works).
        fair: waiting requests are admitted with the tenants taking turns; False: in
            arrival order.
    """

    def __init__(
        self,
        model: Any,
        device: Any,
        *,
        max_batch: int,
        max_prefill_tokens: int,
        pad_id: int,
        fair: bool = True,
    ) -> None:
        self._model = model
        self._cache_kw = cache_keyword(model)
        self._device = device
        self._max_batch = max_batch
        self._max_prefill_tokens = max_prefill_tokens
        self._pad_id = pad_id
        self._waiting: TurnQueue[Sequence] = TurnQueue(fair)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._active: list[Sequence] = []
        self._joining: list[Sequence] = []  # being prefilled, not yet in ``_active``
        self._cache: Any = None  # DynamicCache over the active rows
        self._mask: Any = None  # (B, L) long, 0 = padding
        self._closing = False
        self._tokens_generated = 0
        self._busy_seconds = 0.0
        self._finished = 0
        self._left = 0  # cancelled while waiting (counted under the lock, by ``cancel``)
        self._prefills = 0
        self._thread = threading.Thread(target=self._run, name="zhisuan-batcher", daemon=True)
        self._thread.start()

    # -- called from the asyncio side --------------------------------------------------

    def submit(self, seq: Sequence) -> None:
        """Queue a sequence; it joins the batch at the next iteration with a free slot."""
        with self._lock:
            if self._closing:
                raise RuntimeError("the batcher is closed")
            self._waiting.append(seq.tenant, seq)
        self._wake.set()

    def cancel(self, seq: Sequence) -> None:
        """Mark ``seq`` cancelled: one still waiting leaves the queue now, one in the batch
        has its slot freed at the next iteration."""
        seq.cancelled = True
        with self._lock:
            if self._waiting.remove(seq.tenant, seq):
                self._left += 1
        self._wake.set()

    def stats(self) -> EngineStats:
        """A snapshot of the counters (cheap; safe from any thread)."""
        with self._lock:
            waiting = len(self._waiting)
        return EngineStats(
            active=len(self._active),
            waiting=waiting,
            tokens_generated=self._tokens_generated,
            busy_seconds=self._busy_seconds,
            requests_finished=self._finished + self._left,
            prefills=self._prefills,
        )

    def close(self, timeout: float = 30.0) -> None:
        """Stop the thread; requests still queued or running receive an error."""
        with self._lock:
            self._closing = True
        self._wake.set()
        self._thread.join(timeout)

    # -- the scheduler thread ----------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                closing = self._closing
                idle = not self._waiting and not self._active
            if closing:
                self._fail_all(RuntimeError("the engine is shutting down"))
                return
            if idle:
                self._wake.wait()
                self._wake.clear()
                continue
            try:
                self._iteration()
            except Exception as exc:  # a failed forward must not kill the scheduler
                logger.exception("batch iteration failed; failing %d sequences", len(self._active))
                self._fail_active(exc)

    def _iteration(self) -> None:
        self._retire()
        joiners = self._joining = self._take_joiners()
        start = time.perf_counter()
        with torch.inference_mode():
            if joiners:
                self._prefills += 1
                self._prefill(joiners)
                self._joining = []
                self._retire()
            if self._active:
                self._decode()
                self._retire()
        self._busy_seconds += time.perf_counter() - start

    def _take_joiners(self) -> list[Sequence]:
        joiners: list[Sequence] = []
        budget = self._max_prefill_tokens
        with self._lock:
            while self._waiting and len(self._active) + len(joiners) < self._max_batch:
                seq = self._waiting.peek()
                if seq.cancelled:
                    self._waiting.popleft()
                    self._finished += 1
                    continue
                if joiners and len(seq.prompt_ids) > budget:
                    break
                budget -= len(seq.prompt_ids)
                joiners.append(self._waiting.popleft())
        return joiners

    def _prefill(self, joiners: list[Sequence]) -> None:
        width = max(len(s.prompt_ids) for s in joiners)
        ids = torch.full((len(joiners), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(joiners), width), dtype=torch.long)
        for row, seq in enumerate(joiners):
            n = len(seq.prompt_ids)
            ids[row, width - n :] = torch.tensor(seq.prompt_ids, dtype=torch.long)
            mask[row, width - n :] = 1
            seq.pos = n
        ids, mask = ids.to(self._device), mask.to(self._device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (b, width)
        cache = DynamicCache()
        out = self._model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{self._cache_kw: cache},
        )
        self._merge(cache, mask, joiners)  # filled in place by the forward pass
        for seq, token in zip(joiners, _choose(out.logits[:, -1, :], joiners), strict=True):
            if token is not None:
                self._accept(seq, token)

    def _merge(self, cache: Any, mask: Any, joiners: list[Sequence]) -> None:
        keep = mask.bool()[:, None, :, None]  # (b, 1, l, 1)
        for layer in cache.layers:
            # padded rows may hold NaN from fully masked attention; 0 * NaN would leak
            layer.keys = torch.where(keep, layer.keys, 0)
            layer.values = torch.where(keep, layer.values, 0)
        if self._cache is None:
            self._cache, self._mask, self._active = cache, mask, list(joiners)
            return
        width = max(self._mask.shape[1], mask.shape[1])
        for old, new in zip(self._cache.layers, cache.layers, strict=True):
            old.keys = torch.cat([_pad_left(old.keys, width, 2), _pad_left(new.keys, width, 2)])
            old.values = torch.cat(
                [_pad_left(old.values, width, 2), _pad_left(new.values, width, 2)]
            )
        self._mask = torch.cat([_pad_left(self._mask, width, 1), _pad_left(mask, width, 1)])
        self._active.extend(joiners)

    def _decode(self) -> None:
        rows = len(self._active)
        ids = torch.tensor([[s.generated[-1]] for s in self._active], dtype=torch.long)
        positions = torch.tensor([[s.pos] for s in self._active], dtype=torch.long)
        mask = torch.cat([self._mask, self._mask.new_ones((rows, 1))], dim=1)
        out = self._model(
            input_ids=ids.to(self._device),
            attention_mask=mask,
            position_ids=positions.to(self._device),
            use_cache=True,
            **{self._cache_kw: self._cache},
        )
        self._mask = mask
        for seq, token in zip(
            self._active, _choose(out.logits[:, -1, :], self._active), strict=True
        ):
            seq.pos += 1
            if token is not None and not seq.cancelled:
                self._accept(seq, token)

    def _accept(self, seq: Sequence, token: int) -> None:
        seq.generated.append(token)
        self._tokens_generated += 1
        finish: FinishReason | None = None
        if token in seq.eos_ids and not seq.ignore_eos:
            text = seq.detok.step(seq.generated[:-1], final=True)
            finish = "stop"
        else:
            at_budget = len(seq.generated) >= seq.max_tokens
            text = seq.detok.step(seq.generated, final=at_budget)
            if seq.detok.stopped:
                finish = "stop"
            elif at_budget:
                finish = "length"
        if finish is not None:
            seq.done = True
        if text or finish is not None:
            seq.post(Delta(text, len(seq.prompt_ids), len(seq.generated), finish))

    def _retire(self) -> None:
        keep = [i for i, s in enumerate(self._active) if not (s.done or s.cancelled)]
        if len(keep) == len(self._active):
            return
        self._finished += len(self._active) - len(keep)
        if not keep:
            self._active, self._cache, self._mask = [], None, None
            return
        index = torch.tensor(keep, dtype=torch.long, device=self._mask.device)
        mask = self._mask.index_select(0, index)
        # columns that are padding in every remaining row can go
        first = int(torch.argmax(mask.any(dim=0).to(torch.int8)).item())
        self._mask = mask[:, first:]
        for layer in self._cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, first:]
            layer.values = layer.values.index_select(0, index)[:, :, first:]
        self._active = [self._active[i] for i in keep]

    def _fail_active(self, exc: BaseException) -> None:
        failed = self._active + [s for s in self._joining if s not in self._active]
        for seq in failed:
            if not seq.done:
                seq.done = True
                seq.post(exc)
        self._finished += len(failed)
        self._active, self._joining, self._cache, self._mask = [], [], None, None

    def _fail_all(self, exc: BaseException) -> None:
        self._fail_active(exc)
        with self._lock:
            waiting = self._waiting.drain()
        for seq in waiting:
            seq.post(exc)


def _choose(logits: Any, seqs: list[Sequence]) -> list[int | None]:
    """One token per row of ``logits`` ``(B, vocab)``: one batched argmax for greedy rows
    without penalties (a single device sync), the row's own (penalised) sampler otherwise.

    A row that cannot be sampled (:class:`SamplingError`) gets None, and its sequence is
    failed (``done``, the error posted); the other rows go on.
    """
    greedy: list[int] = logits.argmax(dim=-1).tolist()
    tokens: list[int | None] = []
    for row, seq in enumerate(seqs):
        if is_greedy(seq.temperature) and seq.penalties is None:
            tokens.append(greedy[row])
            continue
        own = logits[row]  # (vocab,)
        if seq.penalties is not None:
            own = seq.penalties.apply(own, seq.generated)
        try:
            tokens.append(sample_row(own, seq.temperature, seq.top_p, seq.generator))
        except SamplingError as exc:
            logger.warning("request %s: %s; failing it", seq.request_id, exc)
            tokens.append(None)
            if not seq.done:
                seq.done = True
                seq.post(exc)
    return tokens


def _pad_left(t: Any, width: int, dim: int) -> Any:
    """``t`` with zeros prepended along ``dim`` up to ``width``."""
    missing = width - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)
