"""One generation request as the scheduler (:mod:`._batcher`) sees it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from zhisuan.engines.base import Delta, PromptLogprobs
from zhisuan.engines.transformers._detok import StopDetokenizer
from zhisuan.engines.transformers._logprobs import Trail
from zhisuan.engines.transformers._prompt import PromptScoring
from zhisuan.engines.transformers._sampling import Penalties


@dataclass(eq=False)
class Sequence:
    """One generation request as the scheduler sees it.

    The consumer's thread sets ``cancelled``; everything else belongs to the scheduler
    thread once the sequence is submitted.
    """

    request_id: str
    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    generator: Any  # torch.Generator | None
    detok: StopDetokenizer
    eos_ids: frozenset[int]
    ignore_eos: bool
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Delta | BaseException]
    tenant: str = ""  # whose line it waits in (see ``TurnQueue``)
    penalties: Penalties | None = None  # presence / frequency penalties, if any
    trail: Trail | None = None  # its tokens' log-probabilities, if it asked for them
    scoring: PromptScoring | None = None  # its prompt's, if it asked for them (``echo``)
    scored: PromptLogprobs | None = None  # its prompt's, until its first delta takes them
    generated: list[int] = field(default_factory=list)
    pos: int = 0  # position id of the next token fed to the model
    cancelled: bool = False  # set by the consumer's thread; read by the scheduler
    done: bool = False

    def post(self, item: Delta | BaseException) -> None:
        """Hand ``item`` to the consumer; the first delta carries the prompt's scores."""
        if self.scored is not None and isinstance(item, Delta):
            item.prompt_logprobs, self.scored = self.scored, None
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the consumer's loop is closed: nobody is listening
            self.cancelled = True
