"""Log-probabilities of the tokens a request generates, for the requests that ask.

Only the rows that asked pay: one ``log_softmax`` over their rows of a step's logits (the
model's own, before temperature, top_p and penalties), the chosen token's value gathered
and the ``k`` most likely taken with one ``topk``; the other rows keep the batch's argmax
and never see this module. Each value rides out with the text it belongs to: a token's
entry waits in its request's :class:`Trail` until a delta carries the first character of
its text (text held back for a stop string or a split character holds its tokens back
too), and the tokens a stop string cuts off are dropped with it.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any

import torch

from zhisuan.engines.base import LogprobTrail, TokenLogprobs, TokenProb

_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")  # SentencePiece's byte fallback
_SPACE = "\u2581"  # SentencePiece's "▁", a space


@dataclass(frozen=True, slots=True)
class Scored:
    """One row's numbers from one step: the chosen token's log-probability and the most
    likely tokens as ``(id, logprob)``, most likely first."""

    logprob: float
    top: list[tuple[int, float]]


class TokenBytes:
    """The UTF-8 bytes of a tokenizer's tokens, as the completion's text has them.

    Byte-level BPE tokens (GPT-2's alphabet) map back to their bytes one character each,
    SentencePiece byte tokens (``<0xE4>``) to their byte and ``▁`` to a space; special and
    added tokens give their text. Any other tokenizer's token is decoded alone. Ids past
    the tokenizer's vocabulary (a model's padded embedding rows) give no bytes.

    Args:
        tokenizer: a Hugging Face tokenizer.
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        kinds = _decoder_kinds(tokenizer)
        self._byte_level = "ByteLevel" in kinds
        self._byte_fallback = "ByteFallback" in kinds
        self._spaces = bool(kinds & {"Metaspace", "Replace"})
        added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        self._cache: dict[int, bytes] = {i: str(t.content).encode() for i, t in added.items()}

    def __call__(self, token_id: int) -> bytes:
        found = self._cache.get(token_id)
        if found is None:
            found = self._cache[token_id] = self._bytes(token_id)
        return found

    def _bytes(self, token_id: int) -> bytes:
        piece = self._tokenizer.convert_ids_to_tokens(token_id)
        if not isinstance(piece, str):
            return b""
        if self._byte_level:
            table = _byte_decoder()
            if all(c in table for c in piece):
                return bytes(table[c] for c in piece)
        if self._byte_fallback and (match := _BYTE_TOKEN.fullmatch(piece)):
            return bytes([int(match.group(1), 16)])
        if self._spaces:
            return piece.replace(_SPACE, " ").encode()
        return str(self._tokenizer.convert_tokens_to_string([piece])).encode()


class Trail(LogprobTrail):
    """One request's token log-probabilities on their way out.

    Args:
        k: the most likely tokens to list at each position.
        token_bytes: the tokenizer's :class:`TokenBytes`.
    """

    def __init__(self, k: int, token_bytes: TokenBytes) -> None:
        super().__init__()
        self.k = k
        self._bytes = token_bytes

    def add(self, token: int, scored: Scored, offset: int) -> None:
        """Keep the entry of ``token``, whose text starts ``offset`` characters into the
        completion's text."""
        prob = TokenProb(token, self._bytes(token), scored.logprob)
        top = tuple(TokenProb(i, self._bytes(i), lp) for i, lp in scored.top)
        self._waiting.append(TokenLogprobs(prob, top, offset))


def score(logits: Any, rows: list[int], tokens: list[int | None], ks: list[int]) -> list[Scored]:
    """The log-probabilities of one step's chosen tokens, for some rows.

    Args:
        logits: ``(B, vocab)`` logits of the step's last position.
        rows: the rows to score (each with a chosen token).
        tokens: the token chosen for each of the ``B`` rows.
        ks: for each of ``rows``, how many of the most likely tokens it lists.

    Returns:
        One :class:`Scored` per row of ``rows``, in order.
    """
    index = torch.tensor(rows, dtype=torch.long, device=logits.device)
    lp = torch.log_softmax(logits.index_select(0, index).float(), dim=-1)  # (R, vocab)
    chosen = torch.tensor([tokens[r] for r in rows], dtype=torch.long, device=logits.device)
    picked = lp.gather(1, chosen[:, None])  # (R, 1)
    k = min(max(ks), lp.shape[-1])
    if k == 0:
        return [Scored(v[0], []) for v in picked.tolist()]
    values, ids = lp.topk(k, dim=-1)  # (R, k), most likely first
    numbers = torch.cat([picked, values], dim=1).tolist()  # one transfer for the values
    top_ids = ids.tolist()
    return [
        Scored(row[0], list(zip(top_ids[i][:want], row[1 : 1 + want], strict=True)))
        for i, (row, want) in enumerate(zip(numbers, ks, strict=True))
    ]


def _decoder_kinds(tokenizer: Any) -> set[str]:
    """The types of a fast tokenizer's decoder and of those in it (``{"ByteLevel"}``)."""
    decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    if decoder is None:
        return set()
    try:
        spec = json.loads(decoder.__getstate__())
    except (AttributeError, TypeError, ValueError):
        return {type(decoder).__name__}
    kinds: set[str] = set()
    stack = [spec]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            kinds.add(str(node.get("type")))
            stack.extend(node.get("decoders") or [])
    return kinds


@functools.cache
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, character to byte: printable bytes stand for
    themselves, the others for the characters from U+0100 on, in order."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}
