"""How the llama.cpp engine evaluates a prompt, so that the same request sent again gets the
same answer.

llama.cpp's matrix kernels round one row (a token evaluated alone) differently from many
(a batch). ``Llama.generate`` keeps the longest prefix the context shares with its previous
tokens and evaluates only the rest; where the whole prompt is held, it evaluates the last
token again, alone. Left at that, a prompt's last token was evaluated in the prompt's batch
the first time and alone the next: its logits, and so a seeded sampled answer and the
log-probabilities, differed between the first request for a prompt and the same request
again.

Here a prompt's tokens but the last are evaluated first (as much of them as the context does
not hold, in one call), and ``Llama.generate`` then evaluates the last one alone, every
time. The guarantee: **a request sent again, with nothing in between that changed the
replica's context where its prompt lies, gets the same answer, bit for bit** (text when
seeded, and log-probabilities); a request that only extended the prompt (a longer prompt,
a chat's next turn) changes nothing there. What the context holds is still reused as
before: a prompt that extends an earlier one evaluates only its new tokens. A request in
between that rewrote part of the prompt's rows makes them be evaluated again, in a batch of
another size, which some kernels round differently.

The cost: one more decode call for a prompt whose last token the context does not hold (the
cost of one generated token).
"""

from __future__ import annotations

from typing import Any


def evaluate_prompt(llm: Any, ids: list[int]) -> None:
    """Leave ``llm``'s context holding ``ids`` but the last, so that ``llm.generate(ids)``
    evaluates the last token alone over them (see the module docstring).

    Args:
        llm: the ``llama_cpp.Llama``.
        ids: the prompt's tokens (at least one).
    """
    if getattr(llm, "_is_recurrent", False) or getattr(llm, "_is_hybrid", False):
        return  # a state that cannot be cut back: ``generate`` evaluates it afresh
    import numpy as np

    head = ids[:-1]
    n = min(len(head), int(llm.n_tokens))
    differ = np.flatnonzero(llm.input_ids[:n] != np.asarray(head[:n], dtype=np.intc))
    shared = int(differ[0]) if differ.size else n
    llm.n_tokens = shared
    if shared < len(head):
        llm.eval(head[shared:])  # ``Llama.eval`` cuts the context back to ``shared`` first
