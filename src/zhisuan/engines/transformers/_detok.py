"""Incremental detokenization with stop strings.

Tokens do not map one-to-one onto characters: a byte-level BPE token may hold half of a
multi-byte UTF-8 character, and some decoders change spacing depending on neighbours.
So each step decodes the *whole* generated id list and emits only the new suffix,
holding back text that is still ambiguous:

- a trailing U+FFFD (an incomplete UTF-8 sequence that the next token will finish);
- a suffix that could be the beginning of a stop string (it is emitted once the next
  tokens prove it is not one).
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

_REPLACEMENT = "\ufffd"


class StopDetokenizer:
    """Turns a growing list of token ids into text deltas, cut at the first stop string.

    Args:
        tokenizer: a Hugging Face tokenizer (``decode`` is used).
        stop: strings that end the completion; they are never emitted.
    """

    def __init__(self, tokenizer: Any, stop: list[str]) -> None:
        self._tokenizer = tokenizer
        self._stop = [s for s in stop if s]
        self._emitted = 0  # characters of the decoded text already sent
        self.settled = 0
        """Characters of the text last decoded, less a trailing incomplete character: where
        the next token's text starts."""
        self.stopped = False

    @property
    def emitted(self) -> int:
        """Characters of the completion's text returned so far."""
        return self._emitted

    def step(self, ids: list[int], *, final: bool = False) -> str:
        """Text that became safe to emit after the latest token.

        Args:
            ids: every generated id so far (prompt excluded).
            final: no more tokens will come, so flush what was held back.

        Returns:
            The new text (possibly empty). After a stop string is found, ``stopped`` is
            true and the text up to (not including) the stop string has been returned.
        """
        if self.stopped:
            return ""
        text = self._tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        self.settled = len(text.rstrip(_REPLACEMENT))
        if self._stop:
            # A stop string cannot start before ``_emitted``: text that could begin one is
            # always held back, so searching from there is enough.
            cut = min(
                (i for i in (text.find(s, self._emitted) for s in self._stop) if i >= 0),
                default=-1,
            )
            if cut >= 0:
                self.stopped = True
                return self._take(text, cut)
        if final:
            return self._take(text, len(text))
        end = len(text)
        if text.endswith(_REPLACEMENT):
            end = len(text.rstrip(_REPLACEMENT))
        end -= self._held_for_stop(text[:end])
        return self._take(text, max(end, self._emitted))

    def _held_for_stop(self, text: str) -> int:
        """Length of the longest suffix of ``text`` past ``_emitted`` that starts a stop."""
        longest = 0
        tail = text[self._emitted :]
        for s in self._stop:
            for n in range(min(len(s) - 1, len(tail)), longest, -1):
                if tail.endswith(s[:n]):
                    longest = n
                    break
        return longest

    def _take(self, text: str, end: int) -> str:
        if end <= self._emitted:
            return ""
        piece = text[self._emitted : end]
        self._emitted = end
        return piece
