"""Log-probabilities on the llama.cpp engine, for the requests that ask.

llama-cpp-python keeps the logits of every position only for a model loaded with
``logits_all``, which costs every request memory and time. A logits processor sees each
step's logits without it: a request that asks adds a :class:`Trail` to its
``Llama.generate``, which llama.cpp calls with the step's raw logits (one float per
vocabulary entry; the sampler chain's penalties, top_p and temperature come after it) and
which keeps their log-softmax, in float32, until the token sampled from them comes back. A
request that does not ask adds no processor and computes nothing. The trail goes before
``ignore_eos``'s processor, which bars the end tokens with -inf: the values are the model's.

The rules are the transformers engine's (:mod:`zhisuan.engines.transformers._logprobs`):
a token's entry waits until a delta carries the first character of its text (text held back
for a stop string or a split character holds its tokens back too); the tokens a stop string
cuts off are dropped with it; the end-of-generation token that ends a completion gets none.
A token's bytes are llama.cpp's piece for it alone, a special token's its text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zhisuan.engines.base import LogprobTrail, TokenLogprobs, TokenProb

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


class TokenBytes:
    """Each token's UTF-8 bytes as llama.cpp spells the token alone (a special token by its
    text, which the completion's text leaves out), kept once looked up.

    Args:
        llm: the ``llama_cpp.Llama``; called on the llama.cpp thread only.
    """

    def __init__(self, llm: Any) -> None:
        self._llm = llm
        self._cache: dict[int, bytes] = {}

    def __call__(self, token: int) -> bytes:
        found = self._cache.get(token)
        if found is None:
            found = self._cache[token] = bytes(self._llm.detokenize([token], special=True))
        return found


class Trail(LogprobTrail):
    """One request's log-probabilities: the logits processor that scores each step, and the
    entries of its tokens on their way out.

    Args:
        k: the most likely tokens to list at each position.
        token_bytes: the engine's :class:`TokenBytes`.
    """

    def __init__(self, k: int, token_bytes: TokenBytes) -> None:
        super().__init__()
        self.k = k
        self._bytes = token_bytes
        self._row: npt.NDArray[np.float32] | None = None  # (vocab,) the last step's

    def __call__(self, _ids: Any, scores: Any) -> Any:
        """The logits processor: keep the log-softmax of this step's ``scores`` (vocab,),
        returned unchanged."""
        import numpy as np

        # a copy: ``scores`` is a strided view of llama.cpp's candidates, rewritten later
        logits = np.array(scores, dtype=np.float32)
        shifted = logits - logits.max()
        self._row = shifted - np.log(np.exp(shifted).sum())
        return scores

    def add(self, token: int, offset: int) -> None:
        """Keep the entry of ``token``, sampled from the step just scored, whose text starts
        ``offset`` characters into the completion's text.

        Raises:
            RuntimeError: no step was scored since the last token (llama-cpp-python did not
                call the processor).
        """
        import numpy as np

        row, self._row = self._row, None
        if row is None:
            raise RuntimeError(f"token {token} was sampled from logits the trail never saw")
        k = min(self.k, row.shape[0])
        top: tuple[TokenProb, ...] = ()
        if k:
            best = np.argpartition(row, -k)[-k:]
            best = best[np.argsort(-row[best], kind="stable")]  # most likely first
            top = tuple(TokenProb(int(i), self._bytes(int(i)), float(row[i])) for i in best)
        prob = TokenProb(token, self._bytes(token), float(row[token]))
        self._waiting.append(TokenLogprobs(prob, top, offset))
