"""What the llama.cpp engine asks of llama-cpp-python's sampler, and the token budget it
keeps itself.

Sampling has OpenAI's meaning, as on the transformers engine: ``temperature`` (one below
:data:`~zhisuan.engines._greedy.GREEDY_BELOW` is greedy, passed as 0: llama.cpp would
divide the logits by it) and ``top_p`` only (no top-k, no min-p), no repeat penalty
(llama.cpp's default of 1.1 would change every answer), and ``presence_penalty`` and
``frequency_penalty`` over the tokens generated so far (llama.cpp's penalties see only
the tokens it samples, never the prompt; the engine widens their window, 64 tokens by
default, to the whole context).

The budget: llama-cpp-python's completion loop skips its ``max_tokens`` check for a
token that leaves a UTF-8 character unfinished (a ``continue`` for as many tokens as it
guesses the character still needs, and a token that brings several bytes makes it guess
too many), so a completion could run past ``max_tokens``. :class:`TokenBudget` counts the
tokens and stops llama.cpp at the first one past the budget (sampled, never shown); the
engine then owes the text of the budget's last tokens, which :func:`owed_text` gives.
"""

from __future__ import annotations

import threading
from typing import Any

from zhisuan.engines._greedy import is_greedy
from zhisuan.protocol import SamplingParams


def sampler_options(params: SamplingParams) -> dict[str, Any]:
    """Keyword arguments of ``Llama.create_completion`` for ``params``' sampling."""
    return {
        "temperature": 0.0 if is_greedy(params.temperature) else params.temperature,
        "top_p": params.top_p,
        "top_k": 0,
        "min_p": 0.0,
        "repeat_penalty": 1.0,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
    }


class TokenBudget:
    """A llama-cpp-python stopping criterion: counts sampled tokens, and stops generation
    when the client has left or once ``max_tokens`` tokens are in.

    llama-cpp-python calls it once per sampled token, before it is shown, with the prompt
    and the completion's earlier tokens, and once more when its loop ends.

    Args:
        max_tokens: the completion budget.
        prompt_tokens: the prompt's length in tokens.
        cancel: set when the client has left.

    Attributes:
        sampled: the calls so far (the sampled tokens, and the last call).
        over: the first ``max_tokens`` completion tokens, once a token past them has been
            sampled (and dropped); None while the completion is within its budget.
    """

    def __init__(self, max_tokens: int, prompt_tokens: int, cancel: threading.Event) -> None:
        self.sampled = 0
        self.over: list[int] | None = None
        self._max_tokens = max_tokens
        self._prompt_tokens = prompt_tokens
        self._cancel = cancel

    def __call__(self, ids: Any, _logits: Any) -> bool:
        if self.over is not None:
            return True
        self.sampled += 1
        if self._cancel.is_set():
            return True
        # ``ids``: the prompt and every completion token before the one just sampled
        if len(ids) - self._prompt_tokens >= self._max_tokens:
            self.over = [int(t) for t in ids[self._prompt_tokens :]]
            return True
        return False


def owed_text(text: str, emitted: str, stop: list[str]) -> tuple[str, bool]:
    """The rest of a completion cut at its budget, after what was already sent.

    Args:
        text: the budget's tokens decoded together (a character split across tokens is
            whole here; llama-cpp-python's own flush decodes them one by one).
        emitted: the text already sent; llama-cpp-python holds back any suffix that could
            begin a stop string, so a stop string can only begin after it.
        stop: the request's stop strings.

    Returns:
        The text still owed (up to the first stop string in it), and whether a stop string
        ended it.
    """
    if not text.startswith(emitted):  # nothing sent can be taken back
        return "", False
    start = len(emitted)
    cut = min((i for i in (text.find(s, start) for s in stop) if i >= 0), default=-1)
    if cut >= 0:
        return text[start:cut], True
    return text[start:], False
