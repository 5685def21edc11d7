"""Log-probabilities from the transformers engine, checked against a plain forward pass.

The values are the model's own: ``log_softmax`` of its logits before temperature, top_p and
penalties, for the token generated and the ``k`` most likely at each position, token for
token, greedy or sampled (``_reference_logprobs``). Only the rows whose requests ask are
scored; the others keep the batch's one argmax. The tests use the demo model
``zhisuan-tiny-chat`` (English and Chinese), and the random tiny Llama of ``conftest`` for
characters split across tokens.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import torch
from _logprobs_answers import COUNT, as_entries, run
from _reference_logprobs import (
    assert_matches,
    log_softmax_after,
    prompt_ids,
    vocabulary_bytes,
)

from zhisuan.engines.base import Delta, TokenLogprobs
from zhisuan.engines.transformers import TransformersEngine, _select
from zhisuan.engines.transformers._logprobs import Scored, TokenBytes, Trail
from zhisuan.protocol import SamplingParams


async def deltas_of(
    engine: TransformersEngine, prompt: str, params: SamplingParams, *, ignore_eos: bool = False
) -> list[Delta]:
    return [d async for d in engine.generate(prompt, params, "t", ignore_eos=ignore_eos)]


def reference(hf: tuple[Any, Any], prompt: str, entries: list[TokenLogprobs]) -> torch.Tensor:
    tokenizer, model = hf
    return log_softmax_after(model, prompt_ids(tokenizer, prompt), [e.token.id for e in entries])


# -- token for token against the reference ----------------------------------------------------


@pytest.mark.parametrize("k", [0, 1, 5, 20])
def test_greedy_values_are_the_models_log_softmax(
    demo: TransformersEngine, hf: tuple[Any, Any], k: int
) -> None:
    prompt = demo.render_chat(COUNT)
    text, deltas, entries = run(demo, SamplingParams(max_tokens=24, temperature=0, logprobs=k))
    assert deltas[-1].prompt_tokens == len(prompt_ids(hf[0], prompt))
    assert len(entries) >= 8 and all(d.logprobs is not None for d in deltas)
    assert_matches(as_entries(entries), reference(hf, prompt, entries), k, greedy=True)
    assert b"".join(e.token.bytes for e in entries).decode() == text


@pytest.mark.parametrize(
    "sampling",
    [
        {"temperature": 1.3, "seed": 11},
        {"temperature": 0.8, "top_p": 0.5, "seed": 3},
        {"temperature": 1.0, "seed": 5, "frequency_penalty": 1.5, "presence_penalty": 0.5},
        {"temperature": 0.0, "frequency_penalty": 2.0},
    ],
    ids=["hot", "top_p", "penalties", "greedy-penalised"],
)
def test_sampled_values_are_before_temperature_top_p_and_penalties(
    demo: TransformersEngine, hf: tuple[Any, Any], sampling: dict[str, Any]
) -> None:
    prompt = demo.render_chat(COUNT)
    params = SamplingParams(max_tokens=24, logprobs=3, **sampling)
    text, deltas, entries = run(demo, params, ignore_eos=True)
    assert len(entries) == deltas[-1].completion_tokens == 24
    assert_matches(as_entries(entries), reference(hf, prompt, entries), 3, greedy=False)
    # the answer is the one the request gets without log-probabilities
    assert text == run(demo, SamplingParams(max_tokens=24, **sampling), ignore_eos=True)[0]


def test_a_chinese_prompt_and_the_vocabulary_bytes(
    demo: TransformersEngine, hf: tuple[Any, Any]
) -> None:
    prompt = demo.render_chat([{"role": "user", "content": "你好"}])
    params = SamplingParams(max_tokens=16, temperature=0, logprobs=4)
    text, _, entries = run(demo, params, prompt)
    assert_matches(as_entries(entries), reference(hf, prompt, entries), 4, greedy=True)
    table = vocabulary_bytes(hf[0])
    for entry in entries:
        assert entry.token.bytes == table[entry.token.id]
        assert all(t.bytes == table[t.id] for t in entry.top)
    assert b"".join(e.token.bytes for e in entries).decode() == text


# -- what each delta carries ---------------------------------------------------------------------


def test_tokens_split_across_characters_ride_with_their_text(chat: TransformersEngine) -> None:
    """The random tiny Llama splits Chinese characters across tokens: each delta carries the
    tokens whose text starts in what it and the deltas before it sent, and the bytes of all
    the tokens are the text."""
    params = SamplingParams(max_tokens=48, temperature=1.0, seed=2, logprobs=2)
    text, deltas, entries = run(chat, params, prompt="你好，世界", ignore_eos=True)
    assert len(entries) == 48
    sent = 0
    for delta in deltas:
        sent += len(delta.text)
        assert delta.logprobs is not None
        assert all(e.offset < sent or delta.finish_reason for e in delta.logprobs)
    assert [e.offset for e in entries] == sorted(e.offset for e in entries)
    whole = b"".join(e.token.bytes for e in entries)
    assert whole.decode("utf-8", "replace") == text
    assert any(len(e.token.bytes.decode("utf-8", "ignore")) == 0 for e in entries), (
        "no token held part of a character; pick another seed"
    )


def test_requests_without_logprobs_get_none(demo: TransformersEngine) -> None:
    _, deltas, _ = run(demo, SamplingParams(max_tokens=8, temperature=0))
    assert all(d.logprobs is None for d in deltas)


# -- only the rows that ask pay --------------------------------------------------------------


def test_only_rows_that_ask_are_scored(
    demo: TransformersEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = SamplingParams(max_tokens=16, temperature=0)
    sampled = SamplingParams(max_tokens=16, temperature=0.9, seed=4)
    asking = SamplingParams(max_tokens=16, temperature=0, logprobs=2)
    alone = [run(demo, p, ignore_eos=True)[0] for p in (plain, sampled, asking)]
    scored: list[list[int]] = []
    real = _select.score

    def spy(logits: Any, rows: list[int], tokens: list[int | None], ks: list[int]) -> Any:
        scored.append(list(rows))
        return real(logits, rows, tokens, ks)

    monkeypatch.setattr(_select, "score", spy)
    prompt = demo.render_chat(COUNT)

    async def together(params: list[SamplingParams]) -> list[list[Delta]]:
        runs = [deltas_of(demo, prompt, p, ignore_eos=True) for p in params]
        return list(await asyncio.gather(*runs))

    answers = asyncio.run(together([plain, sampled]))
    assert scored == []  # no request asked: no step scored anything
    answers = asyncio.run(together([plain, sampled, asking]))
    assert ["".join(d.text for d in a) for a in answers] == alone
    assert all(d.logprobs is None for a in answers[:2] for d in a)
    assert len(scored) == 16 and all(len(rows) == 1 for rows in scored)  # its row only
    entries = [e for d in answers[2] for e in d.logprobs or []]
    assert len(entries) == 16


# -- the pieces -------------------------------------------------------------------------------


def test_the_byte_level_vocabulary_maps_back_to_its_bytes(hf: tuple[Any, Any]) -> None:
    tokenizer = hf[0]
    token_bytes = TokenBytes(tokenizer)
    table = vocabulary_bytes(tokenizer)
    assert len(table) == len(tokenizer)
    assert all(token_bytes(i) == raw for i, raw in table.items())
    assert token_bytes(len(tokenizer) + 10) == b""  # a padded embedding row


def test_a_sentencepiece_vocabulary_maps_back_to_its_bytes() -> None:
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "\u2581the": 2, "<0x0A>": 3, "<0xE4>": 4, "\u2581": 5, "a": 6}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace("\u2581", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", unk_token="<unk>")
    token_bytes = TokenBytes(fast)
    got = [token_bytes(i) for i in range(7)]
    assert got == [b"<unk>", b"<s>", b" the", b"\n", b"\xe4", b" ", b"a"]


def test_a_trail_lets_a_token_out_with_the_first_of_its_text() -> None:
    trail = Trail(1, lambda i: bytes([i]))  # type: ignore[arg-type]
    for token, offset in [(65, 0), (66, 1), (67, 2), (68, 2), (69, 5)]:
        trail.add(token, Scored(-1.0, [(token, -1.0)]), offset)
    assert [e.token.id for e in trail.take(2)] == [65, 66]
    assert trail.take(2) == []
    assert [e.token.id for e in trail.take(3)] == [67, 68]
    assert trail.take(5) == []  # a stop string cut at 5: the last token is not sent
    assert [e.token.id for e in trail.take(5, everything=True)] == [69]
