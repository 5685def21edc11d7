"""An independent reference for the llama.cpp engine's log-probabilities: a second
``llama_cpp.Llama`` on the same GGUF, loaded with ``logits_all`` (every position's logits
kept), no sampler and no logits processor: the prompt evaluated, then each completion token,
and ``log_softmax`` of each position's logits in float64. Shared by the engine, worker and
server tests.

The completion's tokens are evaluated one at a time, as the engine evaluates them: llama.cpp's
kernels round a batch of positions differently from a single one, so one pass over prompt and
completion together differs from a step-by-step evaluation by up to ~3e-3 on the demo GGUF
(:data:`ONE_PASS_TOLERANCE`); step by step the two agree to ~1e-4 (a prompt that the engine
found cached is replayed from its last token, also a batch of one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

TOLERANCE = 5e-4
"""The engine against the step-by-step reference."""
ONE_PASS_TOLERANCE = 1e-2
"""The engine against one pass over prompt and completion together."""

Entry = tuple[int, float, list[tuple[int, float]]]
"""A token's id and log-probability, and the alternatives as ``(id, logprob)``."""


def reference_llama(path: Path, n_ctx: int = 512) -> Any:
    """A ``Llama`` over ``path`` that keeps every position's logits, apart from any engine."""
    from llama_cpp import Llama

    return Llama(str(path), n_ctx=n_ctx, n_threads=2, logits_all=True, verbose=False)


def prompt_ids(llm: Any, prompt: str) -> list[int]:
    """A prompt's ids as the engine takes them: a BOS of its own unless the text starts with
    the BOS's (a rendered chat template)."""
    bos = bytes(llm.detokenize([llm.token_bos()], special=True)).decode()
    add_bos = not (bos and prompt.startswith(bos))
    return list(llm.tokenize(prompt.encode(), add_bos=add_bos, special=True))


def log_softmax_after(
    llm: Any, prompt: list[int], completion: list[int], *, one_pass: bool = False
) -> npt.NDArray[np.float64]:
    """``(len(completion), vocab)``: row ``i`` the log-probabilities of token ``i`` of the
    completion given the prompt and the tokens before it."""
    llm.reset()
    if one_pass:
        llm.eval(prompt + completion)
    else:
        llm.eval(prompt[:-1])
        llm.eval(prompt[-1:])  # alone, as the engine evaluates a prompt's last token
        for token in completion[:-1]:  # the last token's logits are not needed
            llm.eval([token])
    start = len(prompt) - 1
    logits = np.asarray(llm.scores[start : start + len(completion)], dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def vocabulary_ids(llm: Any) -> dict[bytes, int]:
    """Token bytes (llama.cpp's piece for the token alone, special tokens' text) to token id,
    over the whole vocabulary; the demo GGUF spells every token differently."""
    n = int(llm.n_vocab())
    table = {bytes(llm.detokenize([i], special=True)): i for i in range(n)}
    assert len(table) == n
    return table


def assert_matches(
    entries: list[Entry],
    ref: npt.NDArray[np.float64],
    k: int,
    *,
    greedy: bool,
    tolerance: float = TOLERANCE,
) -> None:
    """Each entry's value is the reference's for its token; its alternatives are the
    reference's ``k`` most likely, most likely first; greedy tokens are the argmax."""
    assert len(entries) == ref.shape[0]
    for pos, (token, logprob, top) in enumerate(entries):
        row = ref[pos]
        assert abs(logprob - row[token]) < tolerance, (pos, token, logprob, row[token])
        if greedy:
            assert row[token] > row.max() - tolerance, (pos, token)
        assert len(top) == k
        values = [v for _, v in top]
        assert values == sorted(values, reverse=True)
        expected = np.sort(row)[::-1][:k]
        assert all(abs(a - b) < tolerance for a, b in zip(values, expected, strict=True))
        for alt, value in top:
            assert abs(value - row[alt]) < tolerance, (pos, alt)
