"""Chosen tokens from a llama.cpp model, whatever its logits: for the engine tests that need
a character split across tokens, or an end at a given token."""

from __future__ import annotations

from typing import Any


class Forced:
    """Makes the engine's ``llm.generate`` sample ``script``'s tokens, in order, by a logits
    processor after the engine's own (which see the model's logits)."""

    def __init__(self, llm: Any) -> None:
        self.script: list[int] = []
        self._generate = llm.generate
        llm.generate = self

    def __call__(self, tokens: list[int], **kwargs: Any) -> Any:
        import numpy as np
        from llama_cpp import LogitsProcessorList

        prompt, script = len(tokens), list(self.script)

        def force(ids: Any, scores: Any) -> Any:
            chosen = script[min(len(ids) - prompt, len(script) - 1)]
            out = np.full_like(scores, -np.inf)
            out[chosen] = 0.0
            return out

        own = list(kwargs.get("logits_processor") or [])
        kwargs["logits_processor"] = LogitsProcessorList([*own, force])
        return self._generate(tokens, **kwargs)
