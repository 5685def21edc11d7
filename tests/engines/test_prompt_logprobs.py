"""A prompt's log-probabilities from the transformers engine (``echo`` with ``logprobs``),
checked against a plain forward pass over the prompt (``_reference_logprobs``).

The first token (the demo model's BOS) has no value; every later one has the model's own
``log_softmax`` of the logits before it, and the ``k`` most likely tokens there; its offset
counts the prompt's characters before its text. Only the requests that ask pay: their
prompts go through a prefill of their own that keeps every position's logits, and every
other prefill keeps the last position's, as before.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from _reference_logprobs import assert_matches, load, log_softmax_of_prompt, prompt_ids

from zhisuan.engines.base import Delta, PromptLogprobs
from zhisuan.engines.transformers import TransformersEngine, _batcher, _prompt
from zhisuan.errors import EngineUnavailable, InvalidParameter
from zhisuan.protocol import SamplingParams

PROMPT = "Once upon a time, in a small village by the sea,"


def scoring(k: int | None = 2, max_tokens: int = 0, **kw: Any) -> SamplingParams:
    return SamplingParams(
        max_tokens=max_tokens, temperature=0, logprobs=k, prompt_logprobs=True, **kw
    )


async def deltas_of(engine: TransformersEngine, prompt: str, params: SamplingParams) -> list[Delta]:
    return [d async for d in engine.generate(prompt, params, "t")]


def run(engine: TransformersEngine, prompt: str, params: SamplingParams) -> list[Delta]:
    return asyncio.run(deltas_of(engine, prompt, params))


def same(a: list[Delta], b: list[Delta]) -> bool:
    """The same tokens with the same values, to float noise (a pass over every position
    computes the last one's logits a hair apart)."""
    x = [e for d in a for e in d.logprobs or []]
    y = [e for d in b for e in d.logprobs or []]
    return [e.token.id for e in x] == [e.token.id for e in y] and all(
        abs(p.token.logprob - q.token.logprob) < 1e-5 for p, q in zip(x, y, strict=True)
    )


def check_prompt(scored: PromptLogprobs, hf: tuple[Any, Any], prompt: str, k: int) -> None:
    """The values against the reference, and the offsets against the prompt's text."""
    tokenizer, model = hf
    ids = prompt_ids(tokenizer, prompt)
    assert [scored.first, *(e.token.id for e in scored.rest)] == ids
    entries = [
        (e.token.id, e.token.logprob, [(t.id, t.logprob) for t in e.top]) for e in scored.rest
    ]
    assert_matches(entries, log_softmax_of_prompt(model, ids), k, greedy=False)
    # the text's bytes, and where each token's starts: a token inside a character starts
    # where the character does
    raw = b"".join(
        e.token.bytes for e in scored.rest if e.token.id not in tokenizer.all_special_ids
    )
    assert raw == prompt.encode()
    at = 0
    for entry in scored.rest:
        assert entry.offset == len(raw[:at].decode("utf-8", "ignore")), entry
        if entry.token.id not in tokenizer.all_special_ids:
            at += len(entry.token.bytes)


@pytest.mark.parametrize("k", [0, 2, 5])
def test_the_prompt_alone_is_scored_with_the_models_values(
    demo: TransformersEngine, hf: tuple[Any, Any], k: int
) -> None:
    (delta,) = run(demo, PROMPT, scoring(k))
    assert (delta.text, delta.finish_reason, delta.completion_tokens) == ("", "length", 0)
    assert delta.prompt_tokens == len(prompt_ids(hf[0], PROMPT)) and delta.logprobs == []
    assert delta.prompt_logprobs is not None
    assert delta.prompt_logprobs.first_bytes == hf[0].bos_token.encode()  # the BOS added
    check_prompt(delta.prompt_logprobs, hf, PROMPT, k)


@pytest.mark.parametrize("rows", [1, 4])
def test_a_prompt_is_scored_a_few_positions_at_a_time(
    demo: TransformersEngine, hf: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch, rows: int
) -> None:
    """The float32 copy and the log-softmax take ``ROWS`` positions at a time (a long prompt
    would hold its whole ``(n, vocab)`` logits twice more at once), with the same values."""
    monkeypatch.setattr(_prompt, "ROWS", rows)
    seen: list[int] = []
    real = torch.log_softmax

    def counted(x: Any, *args: Any, **kw: Any) -> Any:
        seen.append(x.shape[0])
        return real(x, *args, **kw)

    monkeypatch.setattr(_prompt.torch, "log_softmax", counted)
    (delta,) = run(demo, PROMPT, scoring(2))
    monkeypatch.undo()
    assert delta.prompt_logprobs is not None
    check_prompt(delta.prompt_logprobs, hf, PROMPT, 2)
    n = len(prompt_ids(hf[0], PROMPT))
    assert seen and max(seen) <= rows and sum(seen) == n - 1


def test_the_completion_after_a_scored_prompt_is_unchanged(
    demo: TransformersEngine, hf: tuple[Any, Any]
) -> None:
    asked = run(demo, PROMPT, scoring(3, max_tokens=10))
    plain = run(demo, PROMPT, SamplingParams(max_tokens=10, temperature=0, logprobs=3))
    assert [d.text for d in asked] == [d.text for d in plain]
    assert same(asked, plain)
    assert asked[0].prompt_logprobs is not None  # the first delta carries it, no other
    assert all(d.prompt_logprobs is None for d in asked[1:] + plain)
    check_prompt(asked[0].prompt_logprobs, hf, PROMPT, 3)


def test_characters_split_across_tokens(chat: TransformersEngine, tiny_dir: Path) -> None:
    """The random tiny Llama splits Chinese characters across tokens."""
    prompt = "你好，世界。Hello"
    (delta,) = run(chat, prompt, scoring(4))
    assert delta.prompt_logprobs is not None
    check_prompt(delta.prompt_logprobs, load(tiny_dir), prompt, 4)
    offsets = [e.offset for e in delta.prompt_logprobs.rest]
    assert len(set(offsets)) < len(offsets), "no character was split; pick another prompt"


def test_a_budget_of_nothing_scores_or_is_refused(demo: TransformersEngine) -> None:
    with pytest.raises(InvalidParameter, match="at least 1"):
        run(demo, PROMPT, SamplingParams(max_tokens=0, temperature=0, logprobs=2))
    limit = demo.info.context_length
    with pytest.raises(Exception, match="maximum context length"):
        run(demo, "word " * limit, scoring())


# -- only the requests that ask pay -----------------------------------------------------------


class Forwards:
    """The model's forward passes: each prefill's rows and the positions its logits keep."""

    def __init__(self, model: Any) -> None:
        self.prefills: list[tuple[int, int]] = []  # (rows, logits_to_keep)
        self._forward = model.forward

    def __call__(self, *args: Any, **kw: Any) -> Any:
        if "logits_to_keep" in kw:  # a decode step keeps what it computes: one position
            self.prefills.append((kw["input_ids"].shape[0], kw["logits_to_keep"]))
        return self._forward(*args, **kw)


def texts(answers: list[list[Delta]]) -> list[list[str]]:
    return [[d.text for d in a] for a in answers]


def together(engine: TransformersEngine, params: list[SamplingParams]) -> list[list[Delta]]:
    async def go() -> list[list[Delta]]:
        return list(await asyncio.gather(*(deltas_of(engine, PROMPT, p) for p in params)))

    return asyncio.run(go())


def test_only_the_requests_that_ask_pay(
    demo: TransformersEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = [
        SamplingParams(max_tokens=8, temperature=0),
        SamplingParams(max_tokens=8, temperature=0.9, seed=3, logprobs=2),  # no echo
        SamplingParams(max_tokens=8, temperature=0, stop=["xyz"]),
    ]
    alone = [run(demo, PROMPT, p) for p in plain]
    model = demo._model
    forwards = Forwards(model)
    monkeypatch.setattr(model, "forward", forwards)
    calls: list[int] = []
    real = _batcher.score_prompt

    def spy(logits: Any, ids: list[int], scoring: Any) -> PromptLogprobs:
        calls.append(len(ids))
        return real(logits, ids, scoring)

    monkeypatch.setattr(_batcher, "score_prompt", spy)
    assert texts(together(demo, plain)) == texts(alone)
    assert calls == [] and forwards.prefills and all(k == 1 for _, k in forwards.prefills)
    forwards.prefills.clear()

    answers = together(demo, [*plain, scoring(2), scoring(1, max_tokens=4)])
    assert texts(answers[:3]) == texts(alone)  # what the others get, and their prefill,
    assert all(same(a, b) for a, b in zip(answers[:3], alone, strict=True))  # are unchanged
    assert sum(rows for rows, k in forwards.prefills if k == 1) == 3
    assert sum(rows for rows, k in forwards.prefills if k == 0) == 2  # the scoring pass
    assert calls == [len(prompt_ids(demo._tokenizer, PROMPT))] * 2
    assert len(answers[3]) == 1 and answers[3][0].prompt_logprobs is not None
    assert answers[4][0].prompt_logprobs is not None and answers[4][-1].completion_tokens == 4
    assert [d.text for d in answers[4]] == [d.text for d in run(demo, PROMPT, scoring(1, 4))]


def test_a_failed_scoring_pass_fails_only_its_requests(
    demo: TransformersEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = SamplingParams(max_tokens=8, temperature=0)
    alone = run(demo, PROMPT, plain)

    def broken(logits: Any, ids: list[int], scoring: Any) -> PromptLogprobs:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(_batcher, "score_prompt", broken)

    async def go() -> list[Any]:
        runs = [deltas_of(demo, PROMPT, plain), deltas_of(demo, PROMPT, scoring(max_tokens=4))]
        return list(await asyncio.gather(*runs, return_exceptions=True))

    answer, failure = asyncio.run(go())
    assert answer == alone
    assert isinstance(failure, EngineUnavailable) and "out of memory" in str(failure)
    for _ in range(200):  # the scheduler retires the finished row after it posts its end
        if demo.stats().active == 0:
            break
        time.sleep(0.01)
    assert demo.stats().active == 0
