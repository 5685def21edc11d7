"""The one interface every inference engine implements.

An engine lives inside a worker process (``zhisuan.engines.worker``), never in the
gateway. The worker's serving layer turns OpenAI requests into calls on this interface
and formats the answers; the engine only tokenizes, generates and embeds.

Contract:

- ``generate`` yields :class:`Delta` items as text becomes available. The last item has
  ``finish_reason`` set (``"stop"`` for EOS or a stop string, ``"length"`` for the token
  budget). Stop strings are not included in the text. Closing the iterator early (the
  client went away: ``aclose()`` or task cancellation) aborts the sequence and frees its
  batch slot at once.
- Token counts are the model's own tokenizer's.
- Log-probabilities: an engine whose ``info.logprobs`` is true fills ``Delta.logprobs``
  whenever ``params.logprobs`` is set (a list, possibly empty, on every delta), with one
  :class:`TokenLogprobs` per completion token, in order, each on the delta that carries the
  first of its text (or a later one; the last delta carries any left). The end-of-sequence
  token that ended a completion, and tokens wholly inside a stop string, are not part of
  the completion and get none. The worker refuses a request asking for them of an engine
  that does not declare them, rather than answer without.
- Prompt log-probabilities: an engine whose ``info.prompt_logprobs`` is true scores the
  prompt when ``params.prompt_logprobs`` is set (a text completion's ``echo`` with
  ``logprobs``), and the first delta it yields carries a :class:`PromptLogprobs`
  (``Delta.prompt_logprobs``); with ``max_tokens`` 0 that delta is the only one, finished
  (``"length"``) with no completion token. A request that does not ask costs nothing more.
- Errors: a request the engine cannot serve for the caller's reasons raises a
  ``zhisuan.errors.UserError`` (e.g. ``ContextLengthExceeded``); anything else is an engine
  failure and surfaces as 503.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from zhisuan.cluster.cores import planned as cores_planned
from zhisuan.protocol import SamplingParams

Task = Literal["chat", "embedding"]
FinishReason = Literal["stop", "length"]


@dataclass(frozen=True, slots=True)
class EngineInfo:
    """What a loaded engine serves.

    Attributes:
        model: the public model name (``/v1/models`` id).
        engine: engine kind, e.g. ``"transformers"``.
        task: ``"chat"`` (chat and text completions) or ``"embedding"``.
        context_length: maximum prompt + completion tokens.
        device: e.g. ``"cpu"`` or ``"cuda:0"``.
        logprobs: ``generate`` returns log-probabilities when asked (see the module
            docstring); False: the worker refuses requests that ask for them.
        prompt_logprobs: ``generate`` scores the prompt's tokens too when asked (``echo``
            with ``logprobs``); False: the worker refuses a text completion that asks for
            both, in OpenAI's words.
    """

    model: str
    engine: str
    task: Task
    context_length: int
    device: str
    logprobs: bool = False
    prompt_logprobs: bool = False


@dataclass(frozen=True, slots=True)
class TokenProb:
    """A token and its log-probability at one position.

    Attributes:
        id: the token id in the model's vocabulary.
        bytes: the token's text as UTF-8 bytes (one token may hold part of a character).
        logprob: natural log of its probability: the log-softmax of the model's logits,
            before temperature, top_p and penalties.
    """

    id: int
    bytes: bytes
    logprob: float


@dataclass(frozen=True, slots=True)
class TokenLogprobs:
    """One completion token's log-probability and the most likely tokens at its position.

    Attributes:
        token: the token generated.
        top: the ``params.logprobs`` most likely tokens at this position, most likely
            first (the generated token among them or not).
        offset: characters of the completion's text before this token's text.
    """

    token: TokenProb
    top: tuple[TokenProb, ...]
    offset: int


@dataclass(frozen=True, slots=True)
class PromptLogprobs:
    """A prompt's tokens scored (``SamplingParams.prompt_logprobs``), as the model took them
    (a BOS the engine adds included, named by its text; its text is not in the prompt).

    Attributes:
        first: the first token's id; it has no context, so no log-probability.
        first_bytes: the first token's text as UTF-8 bytes.
        rest: every later token with its log-probability given the tokens before it and
            the most likely tokens at its position; each ``offset`` counts the prompt's
            characters before its text.
    """

    first: int
    first_bytes: bytes
    rest: tuple[TokenLogprobs, ...]


class LogprobTrail:
    """One request's token log-probabilities on their way out, for an engine's own trail to
    build on: it keeps each token's entry as the token is sampled, and a delta takes the
    entries whose text it is the first to carry (a token holding part of a character waits
    for the character)."""

    def __init__(self) -> None:
        self._waiting: list[TokenLogprobs] = []

    def take(self, emitted: int, *, everything: bool = False) -> list[TokenLogprobs]:
        """The entries whose text starts within the first ``emitted`` characters of the
        completion (all of them with ``everything``), in order; a delta carries them."""
        if everything:
            out, self._waiting = self._waiting, []
            return out
        n = 0
        while n < len(self._waiting) and self._waiting[n].offset < emitted:
            n += 1
        out, self._waiting = self._waiting[:n], self._waiting[n:]
        return out


@dataclass(slots=True)
class Delta:
    """A piece of a completion.

    Attributes:
        text: new text since the previous delta (may be empty on the final item).
        prompt_tokens: tokens in the prompt (constant for a request).
        completion_tokens: tokens generated so far, including this delta's.
        finish_reason: set on the final item only.
        logprobs: the completion tokens this delta brings log-probabilities of, when the
            request asked for them (``SamplingParams.logprobs``); None otherwise.
        prompt_logprobs: the prompt's tokens scored, on the first delta of a request that
            asked (``SamplingParams.prompt_logprobs``); None otherwise.
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason | None = None
    logprobs: list[TokenLogprobs] | None = None
    prompt_logprobs: PromptLogprobs | None = None


@dataclass(frozen=True, slots=True)
class Embeddings:
    """Embedding vectors, one per input, and the tokens they consumed."""

    vectors: list[list[float]]
    prompt_tokens: int


@runtime_checkable
class Engine(Protocol):
    """An inference engine behind a worker.

    Implementations: ``transformers`` (CPU/CUDA, continuous batching), ``llamacpp``
    (GGUF), ``upstream`` (any OpenAI-compatible server).
    """

    info: EngineInfo

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        """Apply the model's chat template with a generation prompt.

        Raises:
            zhisuan.errors.InvalidParameter: the template rejects the messages.
        """
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes as a prompt: the model's tokenizer, plus any special tokens
        (such as BOS) the engine adds, so a completion budget computed from it is exact."""
        ...

    def generate(
        self, prompt: str, params: SamplingParams, request_id: str
    ) -> AsyncIterator[Delta]:
        """Stream the completion of ``prompt``.

        Raises:
            zhisuan.errors.ContextLengthExceeded: prompt (+ requested budget) too long.
        """
        ...

    async def embed(self, texts: list[str], tenant: str = "") -> Embeddings:
        """Embed each text with the model's own pooling (and normalisation, if any), the
        request waiting in ``tenant``'s line (:mod:`zhisuan.engines._turns`)."""
        ...

    async def close(self) -> None:
        """Stop background work and release the device."""
        ...


def cpu_threads(requested: int | str | None = None) -> int:
    """CPU threads an engine computes with: ``requested``, else every core this process may
    use but one.

    The spare core is the worker's event loop's (and the tokenizer's; on a host where the
    gateway does not pin, the gateway's too). An engine whose threads take every core
    stalls whenever anything else runs: each parallel step waits for its slowest thread,
    and a preempted thread is slow. On two cores, unpinned, with the gateway relaying 64
    streams, the demo model served 20% fewer requests per second with two threads than
    with one (``benchmarks/bench_gateway_overhead.py``). A worker pinned to its own cores
    (:mod:`zhisuan.cluster.cores`) counts only those, including while it loads on every
    core before it moves to them.
    """
    if requested:
        return int(requested)
    planned = cores_planned()
    if planned:
        return max(1, len(planned) - 1)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)
