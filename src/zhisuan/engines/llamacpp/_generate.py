"""One completion, run on the llama.cpp thread: tokens from ``Llama.generate``, their
text from :class:`~zhisuan.engines.llamacpp._text.TokenText`.

The engine counts the tokens and ends the completion itself, as the transformers engine
does, rather than through ``Llama.create_completion``, whose loop loses text at its end
(its last flush decodes held-back tokens one by one, dropping a character split across
them, after an end-of-generation token or a stop string) and skips its ``max_tokens``
check for a token that leaves a character unfinished (so it ran past the budget).

Counts: a completion ended by an end-of-generation token counts that token; one ended by a
stop string counts the tokens up to the one that completed the stop string; one ended by
the budget counts ``max_tokens``.

Log-probabilities, for a request that asks (``params.logprobs``), come from a logits
processor on the same loop (:mod:`._logprobs`); a request that does not ask has none.

A prompt's last token is evaluated alone, whatever the context holds (:mod:`._prefix`): the
same request sent again gets the same answer, its text when seeded and its
log-probabilities.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from zhisuan.engines.base import FinishReason, TokenLogprobs
from zhisuan.engines.llamacpp._logprobs import TokenBytes, Trail
from zhisuan.engines.llamacpp._prefix import evaluate_prompt
from zhisuan.engines.llamacpp._sampling import barred, sampler_options
from zhisuan.engines.llamacpp._text import TokenText
from zhisuan.protocol import SamplingParams

Step = tuple[str, FinishReason | None, int, list[TokenLogprobs] | None]
"""(new text, finish reason on the last step, completion tokens so far, the log-probabilities
of the tokens whose text the step brings the first of: a list when the request asked)."""


def complete(
    llm: Any,
    ids: list[int],
    params: SamplingParams,
    *,
    seed: int,
    ignore_eos: bool,
    end_ids: Callable[[], list[int]],
    token_bytes: TokenBytes,
    cancel: threading.Event,
) -> Iterator[Step]:
    """Generate the completion of ``ids``, a step per token that brings text and one last
    step with the finish reason (none when ``cancel`` is set first).

    Args:
        llm: the ``llama_cpp.Llama``.
        ids: the prompt's tokens.
        params: sampling, ``max_tokens`` and ``stop``.
        seed: llama.cpp's seed for the request.
        ignore_eos: bar the end-of-generation tokens: generate exactly ``max_tokens``.
        end_ids: every end-of-generation token (called only for ``ignore_eos``).
        token_bytes: the engine's token bytes, for log-probabilities.
        cancel: set when the client has left; checked before each token is taken.

    Returns:
        An iterator of :data:`Step`.
    """
    from llama_cpp import LogitsProcessorList

    llm.set_seed(seed)
    trail = None if params.logprobs is None else Trail(params.logprobs, token_bytes)
    # the trail first: it scores the raw logits, before ``barred`` sets the end tokens' -inf
    bar = barred(end_ids()) if ignore_eos else None
    processors = [p for p in (trail, bar) if p is not None]
    is_end = _end_test(llm)
    text = TokenText(params.stop)
    evaluate_prompt(llm, ids)  # all but the last token: ``generate`` evaluates it alone
    tokens = llm.generate(
        ids,
        logits_processor=LogitsProcessorList(processors) if processors else None,
        **sampler_options(params),
    )

    def out(everything: bool = False) -> list[TokenLogprobs] | None:
        return None if trail is None else trail.take(text.emitted, everything=everything)

    n = 0
    try:
        for token in tokens:
            if cancel.is_set():
                return
            n += 1
            if not ignore_eos and is_end(token):  # no part of the completion: no entry
                yield text.push(b"", final=True), "stop", n, out(everything=True)
                return
            if trail is not None:
                trail.add(token, text.settled)  # its text starts there
            last = n >= params.max_tokens
            piece = text.push(bytes(llm.detokenize([token])), final=last)
            if text.stopped or last:  # what a stop string cut off stays behind
                finish: FinishReason = "stop" if text.stopped else "length"
                yield piece, finish, n, out(everything=not text.stopped)
                return
            if piece:
                yield piece, None, n, out()
    finally:
        tokens.close()  # the last token is never evaluated, as llama-cpp-python leaves it


def _end_test(llm: Any) -> Callable[[int], bool]:
    """Whether a token ends generation (EOS, and ``<|end|>``-like tokens llama.cpp marks)."""
    import llama_cpp

    vocab = getattr(getattr(llm, "_model", None), "vocab", None)
    if vocab is None:
        eos = int(llm.token_eos())
        return lambda token: token == eos
    return lambda token: bool(llama_cpp.llama_vocab_is_eog(vocab, token))
