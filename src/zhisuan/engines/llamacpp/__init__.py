"""The ``llamacpp`` engine: GGUF models through llama-cpp-python, on CPU.

llama.cpp evaluates one sequence at a time per context, so requests are **serialised**:
a lock admits one generation (or embedding batch) at a time, the waiting generations of
different tenants taking turns (:class:`~zhisuan.engines._turns.TurnLock`; embeddings
wait in the line of the tenant ``""``), and every call into llama.cpp runs on one
dedicated thread (its context is not thread-safe). ``stats()`` reports the request being
served as ``active`` and those queued on the lock as ``waiting``. Closing a stream early
sets a flag the thread checks between tokens, so the slot is free again after at most one
more token.

The chat template is the GGUF's own ``tokenizer.chat_template`` (or the ``chat_template``
option), rendered in a sandboxed Jinja2 environment by llama-cpp-python's
``Jinja2ChatFormatter``. The prompt is tokenized here (BOS added unless the rendered
text already starts with it) and handed to llama.cpp as token ids, so token counts are
exact.

Log-probabilities (``EngineInfo.logprobs``) come from a logits processor that only the
requests asking for them add to their generation (:mod:`._logprobs`), not from
``logits_all``.

Options (``--options`` JSON):
    n_ctx: context length (default: the GGUF's training context).
    n_threads: CPU threads (default every core but one, left to the gateway).
    n_batch: prompt evaluation batch (default 512).
    embedding: true for an embedding GGUF (serves ``/v1/embeddings`` only).
    pooling: ``mean``, ``cls`` or ``last`` (default: the GGUF's; token vectors of a GGUF
        without pooling are averaged).
    normalize: scale embeddings to unit length (default true, as OpenAI's are).
    chat_template: a Jinja2 template overriding the GGUF's.
    n_gpu_layers: layers offloaded when llama.cpp was built with a GPU backend (default 0).
    queue: ``fair`` (tenants take turns, the default) or ``fifo`` (arrival order).
"""

from __future__ import annotations

from zhisuan.engines.llamacpp._engine import INSTALL_HINT, LlamaCppEngine, LlamaCppStats
from zhisuan.engines.llamacpp._load import load

__all__ = ["INSTALL_HINT", "LlamaCppEngine", "LlamaCppStats", "load"]
