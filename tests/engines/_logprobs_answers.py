"""Reading the log-probabilities of an OpenAI answer (or of an engine's deltas) back into
token ids, the form the references (``_reference_logprobs``, ``_reference_llamacpp``)
check. Shared by the engine, worker and server tests; no model is loaded here."""

from __future__ import annotations

import asyncio
import codecs
from collections.abc import Iterable
from typing import Any

from zhisuan.engines.base import Delta, TokenLogprobs
from zhisuan.protocol import SamplingParams

Entry = tuple[int, float, list[tuple[int, float]]]
"""A token's id and log-probability, and the alternatives as ``(id, logprob)``."""
COUNT = [{"role": "user", "content": "Count from 1 to 10."}]


def run(
    engine: Any, params: SamplingParams, prompt: str | None = None, **kw: Any
) -> tuple[str, list[Delta], list[TokenLogprobs]]:
    """An engine's answer to ``prompt`` (the chat ``COUNT`` by default): its text, its deltas
    and their log-probability entries."""
    prompt = engine.render_chat(COUNT) if prompt is None else prompt

    async def go() -> list[Delta]:
        return [d async for d in engine.generate(prompt, params, "t", **kw)]

    deltas = asyncio.run(go())
    entries = [e for d in deltas for e in d.logprobs or []]
    return "".join(d.text for d in deltas), deltas, entries


def as_entries(entries: list[TokenLogprobs]) -> list[Entry]:
    return [(e.token.id, e.token.logprob, [(t.id, t.logprob) for t in e.top]) for e in entries]


def chat_entries(items: list[Any], ids_of: dict[bytes, int]) -> list[Entry]:
    """The entries of a chat answer's ``logprobs.content``, by each token's ``bytes``."""
    out = []
    for item in items:
        assert item.bytes is not None
        top = [(ids_of[bytes(t.bytes or [])], t.logprob) for t in item.top_logprobs]
        out.append((ids_of[bytes(item.bytes)], item.logprob, top))
    return out


def text_token_bytes(token: str) -> bytes:
    """A text completion's token as bytes (OpenAI spells a partial character ``bytes:\\xNN``)."""
    if token.startswith("bytes:"):
        return bytes(codecs.escape_decode(token[len("bytes:") :].encode())[0])
    return token.encode()


def text_completion_entries(
    choices: Iterable[Any], prompt: str, k: int, ids_of: dict[bytes, int], *, stream: bool
) -> list[Entry]:
    """The entries of a text completion's choices (one whole, or a stream's), once their
    shape is checked: the tokens spell the text, each offset counts from the prompt's start,
    and each top list holds ``k`` tokens (``k + 1`` with the chosen one, left out here)."""
    tokens: list[str] = []
    values: list[float] = []
    tops: list[dict[str, float]] = []
    offsets: list[int] = []
    text = ""
    for choice in choices:
        text += choice.text
        if choice.logprobs is None:  # a stream's finish
            assert stream and choice.finish_reason is not None
            continue
        lp = choice.logprobs
        assert lp.tokens is not None and lp.token_logprobs is not None
        assert lp.top_logprobs is not None and lp.text_offset is not None
        assert "".join(lp.tokens) == choice.text
        tokens += lp.tokens
        values += lp.token_logprobs
        tops += lp.top_logprobs
        offsets += lp.text_offset
    assert tokens and "".join(tokens) == text
    assert offsets == [len(prompt) + len("".join(tokens[:i])) for i in range(len(tokens))]
    return _entries(tokens, values, tops, k, ids_of)


def echoed_prompt(
    lp: Any, prompt: str, prompt_tokens: int, k: int, ids_of: dict[bytes, int]
) -> tuple[int, list[Entry]]:
    """The first token's id and the entries of the later ones of an echoed, scored prompt
    (the first ``prompt_tokens`` positions of a text completion's ``logprobs``), once their
    shape is checked: the first has ``null`` for its value and top list, every offset counts
    from the start of the prompt, and each top list holds ``k`` tokens (``k + 1`` with the
    chosen one). The tokens whose bytes spell the prompt are the last ones; any before them
    (a BOS) hold none of its text."""
    tokens = lp.tokens[:prompt_tokens]
    values, tops = lp.token_logprobs[:prompt_tokens], lp.top_logprobs[:prompt_tokens]
    offsets = lp.text_offset[:prompt_tokens]
    assert values[0] is None and tops[0] is None and offsets[0] == 0
    assert None not in values[1:] and None not in tops[1:]
    raw = [text_token_bytes(t) for t in tokens]
    spelled = next(i for i in range(len(raw)) if b"".join(raw[i:]) == prompt.encode())
    # a token that starts inside a character starts where the character does
    before = [len(b"".join(raw[spelled:i]).decode("utf-8", "ignore")) for i in range(len(raw))]
    assert offsets == [0] * spelled + before[spelled:]
    return ids_of[text_token_bytes(tokens[0])], _entries(
        tokens[1:], values[1:], tops[1:], k, ids_of
    )


def _entries(
    tokens: list[str],
    values: list[float],
    tops: list[dict[str, float]],
    k: int,
    ids_of: dict[bytes, int],
) -> list[Entry]:
    ids = [ids_of[text_token_bytes(t)] for t in tokens]
    entries: list[Entry] = []
    for token, value, top in zip(ids, values, tops, strict=True):
        alts = [(ids_of[text_token_bytes(t)], v) for t, v in top.items()]
        alts.sort(key=lambda a: -a[1])
        assert token in {a for a, _ in alts} and len(alts) in (k, k + 1)
        if len(alts) == k + 1:  # the chosen token, which is not among the top k
            alts = [a for a in alts if a[0] != token]
        entries.append((token, value, alts))
    return entries
