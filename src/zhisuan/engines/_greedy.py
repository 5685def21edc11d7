"""When a temperature means greedy decoding, for every engine alike.

A temperature below :data:`GREEDY_BELOW` is greedy: dividing the logits by one that small
overflows them to ``inf`` (a temperature under about 1e-37 gives no distribution at all),
and at 1e-5 sampling already picks the most likely token but for ties. The transformers
engine takes the argmax for such a temperature; the llama.cpp engine passes 0 (llama.cpp's
own greedy sampler), so both give the same answer to the same request.
"""

from __future__ import annotations

GREEDY_BELOW = 1e-5
"""Temperatures below this (0 included) choose the most likely token (argmax)."""


def is_greedy(temperature: float) -> bool:
    """Whether ``temperature`` means argmax rather than sampling (below :data:`GREEDY_BELOW`)."""
    return temperature < GREEDY_BELOW
