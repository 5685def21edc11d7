"""A prompt's tokens scored, for the requests that ask (a text completion's ``echo`` with
``logprobs``).

Their prompts are prefilled in a forward pass of their own that keeps the logits of every
position (``logits_to_keep=0``), while every other request's prefill keeps only the last
position's, as before (:mod:`._batcher`). From a row's logits ``(n, vocab)``, position
``i`` predicting token ``i + 1``: one ``log_softmax`` in float32 (the model's own values,
as a completion token's), the prompt's tokens gathered and the ``k`` most likely taken
with one ``topk``, then one transfer. The first token has no context and gets no value.
That pass holds ``(b, width, vocab)`` logits at once, what scoring ``b`` prompts of
``width`` tokens costs; the float32 copy and the ``log_softmax`` go through a prompt's
positions :data:`ROWS` at a time, so they add no more than that many rows' worth.

Offsets count the prompt's characters before each token's text, from the tokens' bytes
(:class:`~._logprobs.TokenBytes`): a token that starts inside a character (a byte-level
split) starts where that character does, and the tokens the engine adds (a BOS) hold no
text of the prompt.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from zhisuan.engines.base import PromptLogprobs, TokenLogprobs, TokenProb

ROWS = 256
"""Positions of a prompt scored at a time (see the module docstring)."""


@dataclass(frozen=True, slots=True)
class PromptScoring:
    """What scoring one request's prompt needs, ready before it joins the batch.

    Attributes:
        k: the most likely tokens to list at each position.
        offsets: for each prompt token, the prompt's characters before its text.
        token_bytes: a token id's bytes (:class:`~._logprobs.TokenBytes`).
    """

    k: int
    offsets: list[int]
    token_bytes: Callable[[int], bytes]


def char_offsets(
    ids: list[int], text: range, token_bytes: Callable[[int], bytes], prompt: str
) -> list[int]:
    """For each of ``ids``, the characters of ``prompt`` before its text.

    Args:
        ids: the prompt's tokens as the model takes them.
        text: the positions of ``ids`` that hold the prompt's text; the others (a BOS the
            engine adds) hold none of it.
        token_bytes: a token id's bytes.
        prompt: the prompt's text.

    Returns:
        One offset per token, within ``[0, len(prompt)]``.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    chars: list[int] = []  # characters decoded before each token
    seen = 0
    for i, token in enumerate(ids):
        chars.append(seen)
        if i in text:
            seen += len(decoder.decode(token_bytes(token)))  # a split character waits
    extra = max(seen - len(prompt), 0)  # a leading space a SentencePiece token spells
    return [min(max(c - extra, 0), len(prompt)) for c in chars]


def text_positions(ids: list[int], plain: list[int]) -> range:
    """The positions of ``ids`` that hold the prompt's text: where ``plain`` (the prompt
    tokenized without special tokens) lies in it; all of them if it is not found."""
    for start in range(len(ids) - len(plain) + 1):
        if ids[start : start + len(plain)] == plain:
            return range(start, start + len(plain))
    return range(len(ids))


def score_prompt(logits: Any, ids: list[int], scoring: PromptScoring) -> PromptLogprobs:
    """The log-probabilities of one prompt's tokens.

    Args:
        logits: ``(n, vocab)`` the logits of the prompt's ``n`` positions (no padding).
        ids: the prompt's ``n`` tokens.
        scoring: the request's :class:`PromptScoring`.

    Returns:
        The first token, and every later one scored.
    """
    names = scoring.token_bytes
    first = PromptLogprobs(ids[0], names(ids[0]), ())
    if len(ids) < 2:
        return first
    targets = torch.tensor(ids[1:], dtype=torch.long, device=logits.device)
    k = min(scoring.k, logits.shape[-1])
    parts, tops = [], []
    for start in range(0, len(ids) - 1, ROWS):  # row i predicts token i + 1
        rows = slice(start, min(start + ROWS, len(ids) - 1))
        lp = torch.log_softmax(logits[rows].float(), dim=-1)  # (rows, vocab)
        parts.append(lp.gather(1, targets[rows, None]))  # (rows, 1)
        if k:
            values, top = lp.topk(k, dim=-1)  # (rows, k), most likely first
            parts[-1] = torch.cat([parts[-1], values], dim=1)
            tops.append(top)
    numbers = torch.cat(parts).tolist()  # one transfer for the values
    top_ids = torch.cat(tops).tolist() if k else [[] for _ in ids[1:]]
    rest = []
    for pos, (token, row, alts) in enumerate(zip(ids[1:], numbers, top_ids, strict=True)):
        prob = TokenProb(token, names(token), row[0])
        top_probs = tuple(TokenProb(i, names(i), v) for i, v in zip(alts, row[1:], strict=True))
        rest.append(TokenLogprobs(prob, top_probs, scoring.offsets[pos + 1]))
    return PromptLogprobs(first.first, first.first_bytes, tuple(rest))
