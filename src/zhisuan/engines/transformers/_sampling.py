"""Next-token selection: greedy, or temperature + top-p with a per-request generator.

A temperature below :data:`GREEDY_BELOW` is greedy: dividing the logits by one that small
overflows them to ``inf`` (a temperature under about 1e-37 gives no distribution at all),
and at 1e-5 sampling already picks the most likely token but for ties.
"""

from __future__ import annotations

from typing import Any

import torch

GREEDY_BELOW = 1e-5
"""Temperatures below this (0 included) choose the most likely token (argmax)."""


class SamplingError(ValueError):
    """One row's logits give no distribution to sample from (``inf`` or ``NaN``)."""


def is_greedy(temperature: float) -> bool:
    """Whether ``temperature`` means argmax rather than sampling (below :data:`GREEDY_BELOW`)."""
    return temperature < GREEDY_BELOW


def make_generator(seed: int | None, device: Any) -> Any:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``, or ``None`` when unseeded.

    Args:
        seed: the request's seed; ``None`` samples from torch's global generator.
        device: where the logits live (the generator must be on the same device).

    Returns:
        The generator, or ``None``.
    """
    if seed is None:
        return None
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def sample_row(logits: Any, temperature: float, top_p: float, generator: Any) -> int:
    """Choose one token from one row of logits.

    Each request is sampled on its own row with its own generator, so a seeded request
    draws the same tokens whatever else shares the batch.

    Args:
        logits: ``(vocab,)`` float logits of the last position.
        temperature: below :data:`GREEDY_BELOW` (0 included) means greedy (argmax);
            otherwise logits are divided by it.
        top_p: nucleus mass in (0, 1]; the smallest set of tokens whose probability
            reaches ``top_p`` is kept (always at least the most likely token).
        generator: a seeded ``torch.Generator`` or ``None`` for the global one.

    Returns:
        The chosen token id.

    Raises:
        SamplingError: the row's probabilities are not finite (``inf`` or ``NaN`` logits);
            only this row's request can fail for it.
    """
    if is_greedy(temperature):
        return int(torch.argmax(logits).item())
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # (vocab,)
    # checked with the choice, in one transfer; multinomial must not see NaN meanwhile
    # (on CUDA that is a device-side assert, which no later call survives)
    finite = torch.isfinite(probs).all()
    probs = torch.where(finite, probs, 1.0)
    ids = None
    if top_p < 1.0:
        probs, ids = torch.sort(probs, descending=True)
        cumulative = torch.cumsum(probs, dim=-1)
        # keep a token when the mass before it is still below top_p, and the first always
        # (a top_p too small for float32 compares as 0, and 0 < 0 would keep none)
        keep = (cumulative - probs) < top_p
        keep[0] = True
        probs = probs * keep
    choice = torch.multinomial(probs, 1, generator=generator)[0]
    token = choice if ids is None else ids[choice]
    token_id, ok = torch.stack([token, finite.to(token.dtype)]).tolist()
    if not ok:
        raise SamplingError("the logits are not finite: no distribution to sample from")
    return int(token_id)
