"""An independent reference for log-probabilities: the model's plain forward pass over the
whole sequence (no cache, no batch, no padding), ``log_softmax`` of its logits, and each
token's bytes from the tokenizer's vocabulary through GPT-2's byte alphabet as
``transformers`` spells it. Shared by the engine, worker and server tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

TOLERANCE = 1e-4
"""float32 on CPU: a batched, cached step and a plain pass differ by ~1e-6."""

Entry = tuple[int, float, list[tuple[int, float]]]
"""A token's id and log-probability, and the alternatives as ``(id, logprob)``."""


def load(path: Path) -> tuple[Any, Any]:
    """The tokenizer and model at ``path``, loaded apart from any engine."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)  # the engine's
    model.eval()
    return AutoTokenizer.from_pretrained(path), model


def demo_reference() -> tuple[Any, Any]:
    """The demo chat model's tokenizer and model, loaded apart from any engine (skips when
    the model is not built)."""
    import pytest

    from zhisuan.demo import tiny_chat_dir

    path = tiny_chat_dir()
    if not (path / "config.json").is_file():
        pytest.skip("the demo model zhisuan-tiny-chat is not built")
    return load(path)


def vocabulary_bytes(tokenizer: Any) -> dict[int, bytes]:
    """Every token id's bytes: added tokens their text, the rest through the byte alphabet."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    to_byte = {c: b for b, c in bytes_to_unicode().items()}
    out = {i: bytes(to_byte[c] for c in piece) for piece, i in tokenizer.get_vocab().items()}
    for i, token in tokenizer.added_tokens_decoder.items():
        out[i] = str(token.content).encode()
    return out


def prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    """The ids of a prompt as the engines take it: a BOS of its own unless it starts with
    the BOS text (a rendered chat template)."""
    bos = tokenizer.bos_token
    special = not (bos and prompt.startswith(bos))
    return list(tokenizer(prompt, add_special_tokens=special)["input_ids"])


def log_softmax_after(model: Any, prompt: list[int], completion: list[int]) -> torch.Tensor:
    """``(len(completion), vocab)``: row ``i`` the log-probabilities of token ``i`` of the
    completion given the prompt and the tokens before it, from one plain forward pass."""
    ids = torch.tensor([prompt + completion])
    with torch.inference_mode():
        logits = model(ids).logits[0].float()  # (T, vocab)
    return torch.log_softmax(logits[len(prompt) - 1 : len(prompt) - 1 + len(completion)], -1)


def log_softmax_of_prompt(model: Any, prompt: list[int]) -> torch.Tensor:
    """``(len(prompt) - 1, vocab)``: row ``i`` the log-probabilities of token ``i + 1`` of the
    prompt given the tokens before it, from one plain forward pass (the first token has no
    context, hence no row)."""
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        logits = model(ids).logits[0].float()  # (T, vocab)
    return torch.log_softmax(logits[:-1], -1)


def assert_matches(entries: list[Entry], ref: torch.Tensor, k: int, *, greedy: bool) -> None:
    """Each entry's value is the reference's for its token; its alternatives are the
    reference's ``k`` most likely, most likely first; greedy tokens are the argmax."""
    assert len(entries) == ref.shape[0]
    for pos, (token, logprob, top) in enumerate(entries):
        row = ref[pos]
        assert abs(logprob - float(row[token])) < TOLERANCE, (pos, token)
        if greedy:
            assert float(row[token]) > float(row.max()) - TOLERANCE, (pos, token)
        assert len(top) == k
        values = [v for _, v in top]
        assert values == sorted(values, reverse=True)
        expected = row.topk(k).values.tolist() if k else []
        assert all(abs(a - b) < TOLERANCE for a, b in zip(values, expected, strict=True))
        for alt, value in top:
            assert abs(value - float(row[alt])) < TOLERANCE, (pos, alt)
