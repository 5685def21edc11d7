"""A completion's text from its tokens' bytes, cut at the first stop string.

llama.cpp gives each token's text as bytes, and a token may hold part of a multi-byte
UTF-8 character (byte-fallback and byte-level vocabularies split them). The bytes are
decoded incrementally, and text is held back while it is still ambiguous, by the rules of
the transformers engine's :class:`~zhisuan.engines.transformers._detok.StopDetokenizer`:

- an unfinished UTF-8 sequence, until a later token finishes it; at the end of the
  completion (an end-of-generation token, the ``max_tokens`` budget, or a stop string
  after it) one still unfinished is one U+FFFD, as the transformers engine's decode
  gives it, and a malformed sequence is one U+FFFD where it stands;
- a suffix that could begin a stop string, until the next tokens show it does not.

llama-cpp-python's own completion loop is not used for the text: its last flush decodes
the tokens it held back one by one, dropping a character split across them.
"""

from __future__ import annotations

import codecs


class TokenText:
    """Turns tokens' bytes into text deltas, cut at the first stop string.

    Args:
        stop: strings that end the completion; they are never emitted.

    Attributes:
        stopped: a stop string was found; the text before it has been returned.
        emitted: characters of text returned so far.
    """

    def __init__(self, stop: list[str]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._stop = [s for s in stop if s]
        self._held = ""  # decoded, not yet emitted: it could begin a stop string
        self.stopped = False
        self.emitted = 0

    @property
    def settled(self) -> int:
        """Characters decoded so far, returned or held back, less an unfinished character:
        where the next token's text starts."""
        return self.emitted + len(self._held)

    def push(self, piece: bytes, *, final: bool = False) -> str:
        """The text that became safe to emit with ``piece``, the next token's bytes.

        Args:
            piece: the token's bytes (``b""`` for an end-of-generation token).
            final: no more tokens will come: emit what was held back, an unfinished
                character as U+FFFD.

        Returns:
            The new text (possibly empty); once ``stopped``, always empty.
        """
        if self.stopped:
            return ""
        # a stop string cannot begin in text already emitted: text that could begin one
        # is held, so searching what is held and the new text is enough
        text = self._held + self._decoder.decode(piece, final)
        cut = min((i for i in (text.find(s) for s in self._stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            self.emitted += cut
            return text[:cut]
        end = len(text) if final else len(text) - _held_for_stop(text, self._stop)
        self._held = text[end:]
        self.emitted += end
        return text[:end]


def _held_for_stop(text: str, stop: list[str]) -> int:
    """The length of the longest suffix of ``text`` that begins a stop string."""
    longest = 0
    for s in stop:
        for n in range(min(len(s) - 1, len(text)), longest, -1):
            if text.endswith(s[:n]):
                longest = n
                break
    return longest
