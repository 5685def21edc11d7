"""The ``transformers`` engine object: chat with continuous batching, and embeddings."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import jinja2
import torch

from zhisuan.engines.base import Delta, Embeddings, EngineInfo
from zhisuan.engines.transformers._batcher import Batcher, EngineStats
from zhisuan.engines.transformers._detok import StopDetokenizer
from zhisuan.engines.transformers._embed import PoolingSpec
from zhisuan.engines.transformers._embedder import Embedder
from zhisuan.engines.transformers._logprobs import TokenBytes, Trail
from zhisuan.engines.transformers._prompt import PromptScoring, char_offsets, text_positions
from zhisuan.engines.transformers._sampling import Penalties, make_generator
from zhisuan.engines.transformers._sequence import Sequence
from zhisuan.errors import (
    ContextLengthExceeded,
    EngineUnavailable,
    InvalidParameter,
)
from zhisuan.protocol import SamplingParams

logger = logging.getLogger(__name__)


class TransformersEngine:
    """A Hugging Face model served through the :class:`~zhisuan.engines.base.Engine` protocol.

    Build one with :func:`load`. A chat engine owns a :class:`Batcher` thread; an
    embedding engine runs its forward passes on one dedicated thread.
    """

    info: EngineInfo

    def __init__(
        self,
        *,
        info: EngineInfo,
        tokenizer: Any,
        model: Any,
        max_batch: int = 16,
        max_prefill_tokens: int = 4096,
        pooling: PoolingSpec | None = None,
        embed_batch_size: int = 32,
        fair: bool = True,
        group_embeddings: bool = True,
    ) -> None:
        self.info = info
        self._tokenizer = tokenizer
        self._model = model
        self._device = torch.device(info.device)
        self._batcher: Batcher | None = None
        self._embedder: Embedder | None = None
        self._token_bytes = TokenBytes(tokenizer)  # for log-probabilities' tokens
        self._eos_ids = _eos_ids(model, tokenizer)
        pad = tokenizer.pad_token_id
        self._pad_id = pad if pad is not None else (min(self._eos_ids) if self._eos_ids else 0)
        if info.task == "chat":
            self._batcher = Batcher(
                model,
                self._device,
                max_batch=max_batch,
                max_prefill_tokens=max_prefill_tokens,
                pad_id=self._pad_id,
                fair=fair,
            )
        else:
            self._embedder = Embedder(
                model,
                tokenizer,
                self._device,
                pooling or PoolingSpec(("mean",), normalize=False),
                pad_id=self._pad_id,
                limit=info.context_length,
                batch_size=embed_batch_size,
                fair=fair,
                group=group_embeddings,
            )

    # -- Engine protocol -----------------------------------------------------------------

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        """Apply the model's chat template with a generation prompt.

        A tokenizer without a chat template gets a plain fallback: one
        ``"<role>: <content>\\n"`` line per message, then ``"assistant:"``.

        Args:
            messages: ``{"role", "content"}`` dicts in order.

        Returns:
            The prompt text (it may contain the BOS token's text; :meth:`generate` then
            adds no special tokens of its own).

        Raises:
            InvalidParameter: the template rejects the messages (e.g. roles that do not
                alternate).
        """
        if not getattr(self._tokenizer, "chat_template", None):
            lines = [f"{m.get('role', 'user')}: {m.get('content', '')}\n" for m in messages]
            return "".join(lines) + "assistant:"
        try:
            text = self._tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        except jinja2.TemplateError as exc:
            raise InvalidParameter(
                f"the chat template rejected the messages: {exc}", param="messages"
            ) from exc
        return str(text)

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes as a prompt (with the BOS this engine adds, if any)."""
        return len(self._encode_prompt(text))

    def generate(
        self,
        prompt: str,
        params: SamplingParams,
        request_id: str,
        *,
        ignore_eos: bool = False,
    ) -> AsyncIterator[Delta]:
        """Stream the completion of ``prompt`` through the continuous batcher.

        Validation happens at call time, before the stream starts; the sequence joins the
        batch when the returned iterator is first awaited. Closing the iterator early
        (``aclose()`` or cancelling the consuming task) frees the batch slot at the next
        scheduler iteration.

        Args:
            prompt: the full prompt text (e.g. from :meth:`render_chat`). Special tokens
                are added by the tokenizer unless the text already starts with the BOS
                token's text.
            params: sampling parameters; ``max_tokens`` must already fit the context (the
                worker clips it), this method does not clip. With ``logprobs`` set, every
                delta carries the log-probabilities of its tokens (``Delta.logprobs``);
                with ``prompt_logprobs`` too, the first carries its prompt's
                (``Delta.prompt_logprobs``, :mod:`._prompt`), and ``max_tokens`` may be 0:
                the prompt scored, nothing generated.
            request_id: used in log messages.
            ignore_eos: keep generating through EOS until ``max_tokens`` (benchmarks only:
                it makes token counts independent of what the model says).

        Returns:
            An async iterator of :class:`Delta`; the last one has ``finish_reason``.

        Raises:
            ContextLengthExceeded: prompt tokens + ``max_tokens`` exceed
                ``info.context_length``, or the prompt leaves no room for a token it asks.
            InvalidParameter: ``max_tokens`` < 1 (0 only with ``prompt_logprobs``), or
                this is an embedding model.
        """
        if self._batcher is None:
            raise InvalidParameter(
                f"model {self.info.model!r} is an embedding model; it cannot generate text",
                param="model",
            )
        if params.max_tokens < (0 if params.prompt_logprobs else 1):
            raise InvalidParameter(
                "max_tokens must be at least 1 (0 only to score the prompt)", param="max_tokens"
            )
        ids = self._encode_prompt(prompt)
        limit = self.info.context_length
        if len(ids) + params.max_tokens > limit:
            raise ContextLengthExceeded(
                prompt_tokens=len(ids), limit=limit, requested=params.max_tokens
            )
        scoring = None
        if params.prompt_logprobs:
            scoring = self._prompt_scoring(prompt, ids, params.logprobs or 0)
        ignore = ignore_eos or params.ignore_eos
        return self._stream(ids, params, request_id, ignore, scoring)

    async def embed(self, texts: list[str], tenant: str = "") -> Embeddings:
        """Embed each text with the model's own pooling (and normalisation, if any).

        The request waits its tenant's turn for the engine's thread, where it shares forward
        passes of ``embed_batch_size`` rows with the other requests of its group
        (:mod:`~zhisuan.engines.transformers._embedder`).

        Args:
            texts: the inputs; an empty list gives no vectors.
            tenant: whose line the request waits in.

        Returns:
            One vector per input and the prompt tokens consumed (special tokens included,
            as the model sees them).

        Raises:
            ContextLengthExceeded: an input is longer than the model's maximum length
                (``param="input"``); inputs are never truncated.
            InvalidParameter: this is a chat model.
        """
        if self._embedder is None:
            raise InvalidParameter(
                f"model {self.info.model!r} is a chat model; it does not serve embeddings",
                param="model",
            )
        if not texts:
            return Embeddings(vectors=[], prompt_tokens=0)
        vectors, tokens = await self._embedder.embed(texts, tenant)
        return Embeddings(vectors=vectors, prompt_tokens=tokens)

    async def close(self) -> None:
        """Stop the scheduler (failing what is still queued), then release the device."""
        if self._batcher is not None:
            await asyncio.to_thread(self._batcher.close)
        if self._embedder is not None:
            await self._embedder.close()
        self._model = None
        if self._device.type == "cuda":
            torch.cuda.empty_cache()

    # -- extras for the worker -----------------------------------------------------------

    def stats(self) -> EngineStats:
        """Load and work counters for ``/health`` and the metering layer.

        Returns:
            Active and waiting sequences, tokens generated, busy seconds (forward passes:
            the share of wall time the device was working) and finished requests.
        """
        if self._batcher is not None:
            return self._batcher.stats()
        assert self._embedder is not None
        return EngineStats(
            active=self._embedder.active,
            waiting=self._embedder.waiting,
            tokens_generated=0,
            busy_seconds=self._embedder.busy_s,
            requests_finished=self._embedder.finished,
            prefills=self._embedder.passes,  # an embedding's only pass
        )

    # -- internals -----------------------------------------------------------------------

    def _encode_prompt(self, prompt: str) -> list[int]:
        bos = getattr(self._tokenizer, "bos_token", None)
        # a rendered chat template usually starts with the BOS text already
        add_special = not (bos and prompt.startswith(bos))
        ids: list[int] = list(self._tokenizer(prompt, add_special_tokens=add_special)["input_ids"])
        if not ids:
            start = self._tokenizer.bos_token_id
            if start is None:
                raise InvalidParameter("the prompt is empty", param="prompt")
            ids = [int(start)]
        return ids

    def _prompt_scoring(self, prompt: str, ids: list[int], k: int) -> PromptScoring:
        """What scoring ``prompt`` (taken as ``ids``) needs: its tokens' offsets, the
        tokens this engine added (a BOS) holding none of its text."""
        plain = list(self._tokenizer(prompt, add_special_tokens=False)["input_ids"])
        text = text_positions(ids, plain)
        return PromptScoring(
            k, char_offsets(ids, text, self._token_bytes, prompt), self._token_bytes
        )

    async def _stream(
        self,
        ids: list[int],
        params: SamplingParams,
        request_id: str,
        ignore_eos: bool,
        scoring: PromptScoring | None = None,
    ) -> AsyncIterator[Delta]:
        assert self._batcher is not None
        seq = Sequence(
            request_id=request_id,
            prompt_ids=ids,
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            generator=make_generator(params.seed, self._device),
            detok=StopDetokenizer(self._tokenizer, params.stop),
            eos_ids=self._eos_ids,
            ignore_eos=ignore_eos,
            loop=asyncio.get_running_loop(),
            queue=asyncio.Queue(),
            tenant=params.tenant,
            penalties=Penalties.of(params.presence_penalty, params.frequency_penalty),
            trail=None if params.logprobs is None else Trail(params.logprobs, self._token_bytes),
            scoring=scoring,
        )
        try:
            self._batcher.submit(seq)
        except RuntimeError as exc:
            raise EngineUnavailable(f"engine for {self.info.model!r} is shutting down") from exc
        try:
            while True:
                item = await seq.queue.get()
                if isinstance(item, BaseException):
                    raise EngineUnavailable(
                        f"generation failed for request {request_id}: {item}"
                    ) from item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            if not seq.done:
                logger.debug("request %s closed early; cancelling", request_id)
                self._batcher.cancel(seq)


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    generation_config = getattr(model, "generation_config", None)
    for source in (getattr(generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, list):
            ids.update(int(i) for i in source)
    return frozenset(ids)
