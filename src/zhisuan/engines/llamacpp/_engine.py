"""The llama.cpp engine: serialised generation and embedding on one thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from zhisuan.engines._turns import TurnLock
from zhisuan.engines.base import Delta, Embeddings, EngineInfo
from zhisuan.engines.llamacpp._generate import complete
from zhisuan.engines.llamacpp._logprobs import TokenBytes
from zhisuan.errors import ContextLengthExceeded, EngineUnavailable, InvalidParameter
from zhisuan.protocol import SamplingParams

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'zhisuan[llamacpp]'"
_POOLING = {"mean": 1, "cls": 2, "last": 3}  # llama.cpp's LLAMA_POOLING_TYPE_* values
_END = object()
_SEEDS = 2**32 - 1  # llama.cpp keeps 32 bits of a seed, and takes 0xFFFFFFFF for "random"


@dataclass(frozen=True, slots=True)
class LlamaCppStats:
    """Load counters for ``/health``: the request being served and those queued."""

    active: int
    waiting: int
    busy_seconds: float


class LlamaCppEngine:
    """An ``Engine`` over one ``llama_cpp.Llama`` (see the module docstring).

    Args:
        llm: the loaded model.
        info: what this replica serves.
        chat_template: Jinja2 source of the chat template, or None if the GGUF has none.
        normalize: scale embeddings to unit length.
        fair: waiting generations take turns between tenants; False: arrival order.
    """

    def __init__(
        self,
        llm: Any,
        info: EngineInfo,
        chat_template: str | None,
        *,
        normalize: bool = True,
        fair: bool = True,
    ) -> None:
        self.info = info
        self._normalize = normalize
        self._llm = llm
        # presence and frequency penalties count every generated token, as OpenAI's do,
        # not llama.cpp's last 64 (the window llama-cpp-python gives its sampler)
        llm.last_n_tokens_size = int(llm.n_ctx())
        self._lock = TurnLock(fair)  # one sequence at a time: llama.cpp has one context
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zhisuan-llamacpp")
        self._waiting = 0
        self._active = 0
        self._busy = 0.0
        self._bos = self._token_text(llm.token_bos())
        self._eos_id = int(llm.token_eos())
        self._eog_ids: list[int] | None = None
        self._token_bytes = TokenBytes(llm)  # used on the llama.cpp thread only
        self._formatter: Any = None
        if chat_template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            self._formatter = Jinja2ChatFormatter(
                template=chat_template,
                eos_token=self._token_text(self._eos_id),
                bos_token=self._bos,
                add_generation_prompt=True,
            )

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return bytes(self._llm.detokenize([token], special=True)).decode("utf-8", "replace")

    # ---- Engine ------------------------------------------------------------------------

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        """Apply the GGUF's chat template with a generation prompt.

        Raises:
            InvalidParameter: the GGUF has no template, or the template rejects the messages.
        """
        if self._formatter is None:
            raise InvalidParameter(
                f"model {self.info.model!r} has no chat template; use /v1/completions",
                param="messages",
            )
        try:
            return str(self._formatter(messages=messages).prompt)
        except Exception as exc:  # jinja2 errors and the template's raise_exception()
            raise InvalidParameter(
                f"the chat template rejected the messages: {exc}", param="messages"
            ) from exc

    def _encode(self, text: str) -> list[int]:
        add_bos = not (self._bos and text.startswith(self._bos))
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))

    def count_tokens(self, text: str) -> int:
        """Tokens llama.cpp will evaluate for ``text``, including a BOS it would add.

        Counting the BOS keeps the worker's context budget exact for this engine.
        """
        return len(self._encode(text))

    def generate(
        self,
        prompt: str,
        params: SamplingParams,
        request_id: str,
        *,
        ignore_eos: bool = False,
    ) -> AsyncIterator[Delta]:
        """Stream the completion of ``prompt`` (validated now, generated when iterated).

        Args:
            prompt: the full prompt text.
            params: sampling parameters; ``max_tokens`` must fit the context. With
                ``logprobs`` set, every delta carries the log-probabilities of its tokens
                (``Delta.logprobs``, :mod:`._logprobs`).
            request_id: for log messages.
            ignore_eos: generate exactly ``max_tokens`` (benchmarks only).

        Returns:
            An async iterator of deltas; the last has ``finish_reason``.

        Raises:
            InvalidParameter: this is an embedding model.
            ContextLengthExceeded: prompt + ``max_tokens`` exceed the context.
        """
        if self.info.task != "chat":
            raise InvalidParameter(
                f"model {self.info.model!r} is an embedding model", param="model"
            )
        ids = self._encode(prompt)
        limit = self.info.context_length
        if len(ids) + params.max_tokens > limit:
            raise ContextLengthExceeded(
                prompt_tokens=len(ids), limit=limit, requested=params.max_tokens
            )
        return self._stream(ids, params, request_id, ignore_eos or params.ignore_eos)

    async def _stream(
        self, ids: list[int], params: SamplingParams, request_id: str, ignore_eos: bool
    ) -> AsyncIterator[Delta]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()

        def emit(item: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is listening
                loop.call_soon_threadsafe(queue.put_nowait, item)

        self._waiting += 1
        queued = True
        try:
            async with self._lock.hold(params.tenant):
                self._waiting -= 1
                queued = False
                self._active = 1
                started = loop.time()
                job = loop.run_in_executor(
                    self._thread, self._produce, ids, params, ignore_eos, emit, cancel
                )
                try:
                    async for delta in self._deltas(queue, len(ids), request_id):
                        yield delta
                finally:
                    cancel.set()
                    self._active = 0
                    self._busy += loop.time() - started
                    # let the thread finish its token before the next request takes the lock;
                    # if we are cancelled meanwhile, the one-thread executor still keeps
                    # llama.cpp calls from overlapping
                    with contextlib.suppress(Exception):
                        await asyncio.shield(job)
        finally:
            if queued:
                self._waiting -= 1

    async def _deltas(
        self, queue: asyncio.Queue[Any], prompt_tokens: int, rid: str
    ) -> AsyncIterator[Delta]:
        while True:
            item = await queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise EngineUnavailable(f"llama.cpp failed on request {rid}: {item}") from item
            text, finish, tokens, logprobs = item  # a step of ``_generate.complete``
            yield Delta(text, prompt_tokens, tokens, finish, logprobs)
            if finish is not None:
                return

    def _produce(
        self,
        ids: list[int],
        params: SamplingParams,
        ignore_eos: bool,
        emit: Callable[[Any], None],
        cancel: threading.Event,
    ) -> None:
        """Runs on the llama.cpp thread: emit each step of the completion, then ``_END``."""
        if cancel.is_set():  # the client left while queued
            emit(_END)
            return
        seed = llama_seed(params.seed) if params.seed is not None else random.randrange(2**31)
        try:
            for step in complete(
                self._llm,
                ids,
                params,
                seed=seed,
                ignore_eos=ignore_eos,
                end_ids=self._end_ids,
                token_bytes=self._token_bytes,
                cancel=cancel,
            ):
                emit(step)
        except Exception as exc:
            emit(exc)
            return
        emit(_END)

    def _end_ids(self) -> list[int]:
        """Every end-of-generation token (EOS, ``<|end|>``-like tokens llama.cpp marks)."""
        if self._eog_ids is None:
            import llama_cpp

            vocab = getattr(getattr(self._llm, "_model", None), "vocab", None)
            if vocab is None:
                self._eog_ids = [self._eos_id]
            else:
                n = int(self._llm.n_vocab())
                self._eog_ids = [t for t in range(n) if llama_cpp.llama_vocab_is_eog(vocab, t)]
        return self._eog_ids

    async def embed(self, texts: list[str], tenant: str = "") -> Embeddings:
        """Embed each text (embedding GGUFs loaded with ``embedding: true`` only), the
        request waiting in ``tenant``'s line for the one context.

        Raises:
            InvalidParameter: this is a chat model.
            ContextLengthExceeded: a text is longer than the context.
        """
        if self.info.task != "embedding":
            raise InvalidParameter(
                f"model {self.info.model!r} is a chat model; it does not serve embeddings",
                param="model",
            )
        for text in texts:
            n = len(self._encode(text))
            if n > self.info.context_length:
                err = ContextLengthExceeded(prompt_tokens=n, limit=self.info.context_length)
                err.param = "input"
                raise err
        loop = asyncio.get_running_loop()
        self._waiting += 1
        queued = True
        try:
            async with self._lock.hold(tenant):
                self._waiting -= 1
                queued = False
                self._active = 1
                started = loop.time()
                try:
                    raw, tokens = await loop.run_in_executor(
                        self._thread, lambda: self._llm.embed(texts, return_count=True)
                    )
                except Exception as exc:
                    raise EngineUnavailable(f"llama.cpp embedding failed: {exc}") from exc
                finally:
                    self._active = 0
                    self._busy += loop.time() - started
        finally:
            if queued:  # cancelled while it waited for the context
                self._waiting -= 1
        vectors = [_pool(item, self._normalize) for item in raw]
        return Embeddings(vectors, int(tokens))

    def stats(self) -> LlamaCppStats:
        """The request being served, those queued, and seconds spent serving."""
        return LlamaCppStats(self._active, self._waiting, self._busy)

    async def close(self) -> None:
        """Wait for the llama.cpp thread, then free the model."""
        await asyncio.to_thread(self._thread.shutdown, True)
        self._llm.close()


def llama_seed(seed: int) -> int:
    """The llama.cpp seed for a request's ``seed``: every value maps to one in
    ``0 .. 2**32 - 2`` (``seed % (2**32 - 1)``), so each is repeatable; passed as is,
    llama.cpp would keep its low 32 bits and take ``0xFFFFFFFF`` (and ``-1``) for "random"."""
    return seed % _SEEDS


def _pool(item: list[Any], normalize: bool) -> list[float]:
    """One vector per input: mean over tokens when the GGUF has no pooling, then L2."""
    if item and isinstance(item[0], list):  # (T, H) token embeddings
        width = len(item[0])
        vector = [sum(row[i] for row in item) / len(item) for i in range(width)]
    else:
        vector = [float(x) for x in item]
    if normalize:
        norm = sum(x * x for x in vector) ** 0.5
        if norm > 0:
            vector = [x / norm for x in vector]
    return vector
