"""What the llama.cpp engine asks of llama-cpp-python's sampler.

Sampling has OpenAI's meaning, as on the transformers engine: ``temperature`` (one below
:data:`~zhisuan.engines._greedy.GREEDY_BELOW` is greedy, passed as 0: llama.cpp would
divide the logits by it) and ``top_p`` only (no top-k, no min-p), no repeat penalty
(llama.cpp's default of 1.1 would change every answer), and ``presence_penalty`` and
``frequency_penalty`` over the tokens generated so far (llama.cpp's penalties see only
the tokens it samples, never the prompt; the engine widens their window, 64 tokens by
default, to the whole context).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zhisuan.engines._greedy import is_greedy
from zhisuan.protocol import SamplingParams


def sampler_options(params: SamplingParams) -> dict[str, Any]:
    """Keyword arguments of ``Llama.generate`` for ``params``' sampling."""
    return {
        "temp": 0.0 if is_greedy(params.temperature) else params.temperature,
        "top_p": params.top_p,
        "top_k": 0,
        "min_p": 0.0,
        "repeat_penalty": 1.0,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
    }


def barred(tokens: list[int]) -> Callable[[Any, Any], Any]:
    """A llama-cpp-python logits processor that never lets ``tokens`` be sampled.

    Args:
        tokens: token ids (the end-of-generation tokens, for ``ignore_eos``).

    Returns:
        ``(input_ids, scores) -> scores``, the scores (one per vocabulary entry) with
        ``tokens``' at minus infinity.
    """

    def bar(_ids: Any, scores: Any) -> Any:
        scores = scores.copy()
        scores[tokens] = float("-inf")
        return scores

    return bar
