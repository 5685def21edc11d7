"""Next-token selection: greedy, or temperature + top-p with a per-request generator,
after the request's presence and frequency penalties (if any).

A temperature below :data:`~zhisuan.engines._greedy.GREEDY_BELOW` is greedy (see
:mod:`zhisuan.engines._greedy`, which the llama.cpp engine shares).
"""

from __future__ import annotations

from typing import Any

import torch

from zhisuan.engines._greedy import is_greedy


class SamplingError(ValueError):
    """One row's logits give no distribution to sample from (``inf`` or ``NaN``)."""


def penalize(logits: Any, counts: Any, presence: float, frequency: float) -> Any:
    """``logits`` with OpenAI's presence and frequency penalties applied.

    ``logit[j] - counts[j] * frequency - (counts[j] > 0) * presence``: a token the
    completion has produced loses ``presence`` once and ``frequency`` per time.

    Args:
        logits: ``(vocab,)`` logits of the last position.
        counts: ``(vocab,)`` times each token has been generated for this request so far
            (the prompt does not count), on the same device.
        presence: the request's ``presence_penalty``.
        frequency: the request's ``frequency_penalty``.

    Returns:
        New ``(vocab,)`` float32 logits.
    """
    counts = counts.float()
    return logits.float() - counts * frequency - (counts > 0).float() * presence


class Penalties:
    """One request's presence and frequency penalties and its counts of generated tokens.

    The counts stay on the logits' device, a ``(vocab,)`` float32 tensor that each step
    adds the tokens generated since the last one to, so a step never recounts the whole
    completion.

    Args:
        presence: the request's ``presence_penalty``.
        frequency: the request's ``frequency_penalty``.
    """

    def __init__(self, presence: float, frequency: float) -> None:
        self.presence = presence
        self.frequency = frequency
        self._counts: Any = None  # (vocab,) float32, made at the first call
        self._counted = 0  # generated tokens already in ``_counts``

    @classmethod
    def of(cls, presence: float, frequency: float) -> Penalties | None:
        """The penalties, or None when both are 0 (such a request keeps the fast path)."""
        return None if presence == 0 and frequency == 0 else cls(presence, frequency)

    def apply(self, logits: Any, generated: list[int]) -> Any:
        """``logits`` ``(vocab,)`` penalised for ``generated`` (every token generated so far,
        in order; each call must extend the last call's list)."""
        if self._counts is None:
            self._counts = logits.new_zeros(logits.shape[-1], dtype=torch.float32)
        new = generated[self._counted :]
        if new:
            ids = torch.tensor(new, dtype=torch.long).to(logits.device)
            self._counts.index_add_(0, ids, self._counts.new_ones(len(new)))
            self._counted = len(generated)
        return penalize(logits, self._counts, self.presence, self.frequency)


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
        temperature: below :data:`~zhisuan.engines._greedy.GREEDY_BELOW` (0 included)
            means greedy (argmax); otherwise logits are divided by it.
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
