"""Continuous batching: one scheduler thread, one batched decode pass per iteration.

Every iteration the scheduler

1. drops cancelled sequences (their consumer closed the stream);
2. admits waiting requests up to ``max_batch``, the tenants taking turns
   (:class:`~zhisuan.engines._turns.TurnQueue`), and prefills them together (left
   padded) in one forward pass that keeps the last position's logits, sampling each
   one's first token (a request cancelled while it waits leaves the queue at once); the
   requests that score their prompts (``echo`` with ``logprobs``) are prefilled in a pass
   of their own that keeps every position's (:mod:`._prompt`);
3. appends their KV to the running batch (both sides left-padded to the common length);
4. runs ONE decode forward over all active sequences and samples one token per row,
   each with its own temperature / top-p / generator / penalties (a row whose logits
   give no distribution fails its own request only), and scores the rows whose requests
   asked for log-probabilities;
5. detokenizes, checks EOS / stop strings / budget, and retires finished rows at once
   (``index_select`` on the batch dimension, then trims padding columns no row uses).

Layout of the running batch (``B`` rows, ``L`` cache columns): every layer of a
``DynamicCache`` holds keys/values ``(B, kv_heads, L, head_dim)``; ``_mask`` is ``(B, L)``
with 0 on left padding (:mod:`._kv` joins and trims them; :mod:`._select` chooses each
row's token). Each row carries its own position counter, passed explicitly as
``position_ids`` so padding never shifts rotary positions. Results reach asyncio through
``loop.call_soon_threadsafe`` into each request's ``asyncio.Queue``.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from zhisuan.engines._turns import TurnQueue
from zhisuan.engines.base import Delta, FinishReason, TokenLogprobs
from zhisuan.engines.transformers import _kv
from zhisuan.engines.transformers._logprobs import Scored
from zhisuan.engines.transformers._prompt import score_prompt
from zhisuan.engines.transformers._select import choose
from zhisuan.engines.transformers._sequence import Sequence

__all__ = ["Batcher", "EngineStats", "Sequence", "cache_keyword"]

logger = logging.getLogger(__name__)


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
        plain = [s for s in joiners if s.scoring is None]
        if plain:
            self._prefill_group(plain)
        scoring = [s for s in joiners if s.scoring is not None]  # in a pass of their own
        if scoring:
            self._prefill_group(scoring, every_position=True)

    def _prefill_group(self, group: list[Sequence], *, every_position: bool = False) -> None:
        """Prefill ``group`` in one pass, join it to the batch and sample each one's first
        token. ``every_position``: keep every position's logits and score each prompt
        (:mod:`._prompt`); a pass that fails then fails only ``group``, and a request with
        no token to generate finishes here, never joining the batch."""
        width = max(len(s.prompt_ids) for s in group)
        ids = torch.full((len(group), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for row, seq in enumerate(group):
            n = len(seq.prompt_ids)
            ids[row, width - n :] = torch.tensor(seq.prompt_ids, dtype=torch.long)
            mask[row, width - n :] = 1
            seq.pos = n
        ids, mask = ids.to(self._device), mask.to(self._device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (b, width)
        cache = DynamicCache()
        try:
            out = self._model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=0 if every_position else 1,  # 0: all of them
                **{self._cache_kw: cache},
            )
            last = out.logits[:, -1, :]  # (b, vocab)
            if every_position:
                last = last.clone()  # not a view: every position's logits go below
                for row, seq in enumerate(group):
                    assert seq.scoring is not None
                    n = len(seq.prompt_ids)
                    seq.scored = score_prompt(
                        out.logits[row, width - n :], seq.prompt_ids, seq.scoring
                    )
        except Exception as exc:
            if not every_position:
                raise  # the batch's own failure (``_run``)
            logger.exception("scoring %d prompts failed; failing their requests", len(group))
            self._finish(group, exc)
            return
        del out  # every position's logits, when kept: the step's largest tensor
        if every_position:
            going = [row for row, seq in enumerate(group) if seq.max_tokens > 0]
            self._finish([seq for seq in group if seq.max_tokens == 0])
            if not going:
                return
            if len(going) < len(group):
                mask = _kv.keep_rows(cache, mask, going)
                last = last.index_select(0, torch.tensor(going, device=last.device))
                group = [group[row] for row in going]
        self._merge(cache, mask, group)  # filled in place by the forward pass
        tokens, scores = choose(last, group)
        for seq, token, scored in zip(group, tokens, scores, strict=True):
            if token is not None:
                self._accept(seq, token, scored)

    def _finish(self, seqs: list[Sequence], exc: BaseException | None = None) -> None:
        """End ``seqs`` before they join the batch: with ``exc``, or with no token
        generated (a budget of 0: the prompt scored, ``"length"``)."""
        for seq in seqs:
            seq.done = True
            logprobs: list[TokenLogprobs] | None = None if seq.trail is None else []
            seq.post(exc or Delta("", len(seq.prompt_ids), 0, "length", logprobs))
        self._finished += len(seqs)

    def _merge(self, cache: Any, mask: Any, joiners: list[Sequence]) -> None:
        _kv.clear_padding(cache, mask)
        if self._cache is None:
            self._cache, self._mask, self._active = cache, mask, list(joiners)
            return
        self._mask = _kv.join(self._cache, self._mask, cache, mask)
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
        tokens, scores = choose(out.logits[:, -1, :], self._active)
        for seq, token, scored in zip(self._active, tokens, scores, strict=True):
            seq.pos += 1
            if token is not None and not seq.cancelled:
                self._accept(seq, token, scored)

    def _accept(self, seq: Sequence, token: int, scored: Scored | None) -> None:
        seq.generated.append(token)
        self._tokens_generated += 1
        finish: FinishReason | None = None
        if token in seq.eos_ids and not seq.ignore_eos:
            text = seq.detok.step(seq.generated[:-1], final=True)
            finish = "stop"  # the EOS is no part of the completion: it has no log-probability
        else:
            if seq.trail is not None and scored is not None:
                seq.trail.add(token, scored, seq.detok.settled)  # its text starts there
            at_budget = len(seq.generated) >= seq.max_tokens
            text = seq.detok.step(seq.generated, final=at_budget)
            if seq.detok.stopped:
                finish = "stop"
            elif at_budget:
                finish = "length"
        if finish is not None:
            seq.done = True
        if text or finish is not None:
            logprobs = None
            if seq.trail is not None:  # what a stop string cut off stays behind
                everything = finish is not None and not seq.detok.stopped
                logprobs = seq.trail.take(seq.detok.emitted, everything=everything)
            seq.post(Delta(text, len(seq.prompt_ids), len(seq.generated), finish, logprobs))

    def _retire(self) -> None:
        keep = [i for i, s in enumerate(self._active) if not (s.done or s.cancelled)]
        if len(keep) == len(self._active):
            return
        self._finished += len(self._active) - len(keep)
        if not keep:
            self._active, self._cache, self._mask = [], None, None
            return
        self._mask = _kv.keep_rows(self._cache, self._mask, keep)
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
