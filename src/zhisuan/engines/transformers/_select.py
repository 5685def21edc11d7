"""The next token of every row of a batch step.

One batched argmax serves every greedy row without penalties (a single device sync); any
other row is chosen on its own, penalised and sampled with its own generator
(:mod:`._sampling`). The rows whose requests asked for log-probabilities are scored
after (:mod:`._logprobs`); a step in which none did costs what it did before.
"""

from __future__ import annotations

import logging
from typing import Any

from zhisuan.engines._greedy import is_greedy
from zhisuan.engines.transformers._logprobs import Scored, score
from zhisuan.engines.transformers._sampling import SamplingError, sample_row
from zhisuan.engines.transformers._sequence import Sequence

logger = logging.getLogger(__name__)


def choose(logits: Any, seqs: list[Sequence]) -> tuple[list[int | None], list[Scored | None]]:
    """One token per row of ``logits`` ``(B, vocab)``: one batched argmax for greedy rows
    without penalties (a single device sync), the row's own (penalised) sampler otherwise.

    A row that cannot be sampled (:class:`SamplingError`) gets None, and its sequence is
    failed (``done``, the error posted); the other rows go on.

    Returns:
        The tokens, and for each row the log-probabilities of its token if its request
        asked for them (:class:`~._logprobs.Scored`), else None.
    """
    greedy: list[int] = logits.argmax(dim=-1).tolist()
    tokens: list[int | None] = []
    asked: list[int] = []  # rows whose requests want log-probabilities
    for row, seq in enumerate(seqs):
        if seq.trail is not None:
            asked.append(row)
        if is_greedy(seq.temperature) and seq.penalties is None:
            tokens.append(greedy[row])
            continue
        own = logits[row]  # (vocab,)
        if seq.penalties is not None:
            own = seq.penalties.apply(own, seq.generated)
        try:
            tokens.append(sample_row(own, seq.temperature, seq.top_p, seq.generator))
        except SamplingError as exc:
            logger.warning("request %s: %s; failing it", seq.request_id, exc)
            tokens.append(None)
            if not seq.done:
                seq.done = True
                seq.post(exc)
    scores: list[Scored | None] = [None] * len(seqs)
    rows = [row for row in asked if tokens[row] is not None]
    if rows:
        ks = [trail.k for row in rows if (trail := seqs[row].trail) is not None]
        for row, scored in zip(rows, score(logits, rows, tokens, ks), strict=True):
            scores[row] = scored
    return tokens, scores
