"""Next-token selection: greedy, or temperature + top-p with a per-request generator."""

from __future__ import annotations

from typing import Any

import torch


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
        temperature: 0 means greedy (argmax); otherwise logits are divided by it.
        top_p: nucleus mass in (0, 1]; the smallest set of tokens whose probability
            reaches ``top_p`` is kept (always at least the most likely token).
        generator: a seeded ``torch.Generator`` or ``None`` for the global one.

    Returns:
        The chosen token id.
    """
    if temperature <= 0.0:
        return int(torch.argmax(logits).item())
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # (vocab,)
    if top_p < 1.0:
        sorted_probs, sorted_ids = torch.sort(probs, descending=True)
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        # keep a token when the mass before it is still below top_p (the first always stays)
        keep = (cumulative - sorted_probs) < top_p
        sorted_probs = sorted_probs * keep
        choice = torch.multinomial(sorted_probs, 1, generator=generator)
        return int(sorted_ids[choice].item())
    return int(torch.multinomial(probs, 1, generator=generator).item())
