"""The shipped ``zhisuan-tiny-chat`` loads offline and chats, in transformers and in llama.cpp."""

from __future__ import annotations

import os
from typing import Any

import pytest

from zhisuan.demo import tiny_chat_dir, tiny_chat_gguf

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PROMPTS = ["Hello!", "What is a GPU?", "What is 2 plus 3?"]
MAX_NEW = 64


@pytest.fixture(scope="module")
def hf() -> tuple[Any, Any]:
    """(tokenizer, float32 model) of the shipped Hugging Face checkpoint."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.set_num_threads(2)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_chat_dir())
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_chat_dir(), dtype=torch.float32)
    return tokenizer, model.eval()


@pytest.fixture(scope="module")
def llm() -> Any:
    """The shipped GGUF in llama.cpp. One thread: llama.cpp's threads spin-wait, which is slow
    when the test machine's two cores are shared."""
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(
        model_path=str(tiny_chat_gguf()), n_ctx=512, n_threads=1, seed=0, verbose=False
    )


def _chat_ids(tokenizer: Any, prompt: str) -> list[int]:
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, return_dict=True
    )["input_ids"]
    return list(ids)


def _hf_greedy(model: Any, ids: list[int], max_new: int) -> list[int]:
    import torch

    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=max_new, do_sample=False)
    return [int(t) for t in out[0, len(ids) :]]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_hf_greedy_reply_is_english_and_stops_on_end(hf: tuple[Any, Any], prompt: str) -> None:
    tokenizer, model = hf
    new = _hf_greedy(model, _chat_ids(tokenizer, prompt), MAX_NEW)
    assert new[-1] == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("<|end|>")
    reply = tokenizer.decode(new, skip_special_tokens=True).strip()
    assert len(reply.split()) >= 2, reply
    assert reply.isascii(), reply


def test_chat_template_renders_roles_and_generation_prompt(hf: tuple[Any, Any]) -> None:
    tokenizer, _ = hf
    text = tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert text == "<|bos|><|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n"


@pytest.mark.llamacpp
def test_gguf_greedy_matches_transformers_token_for_token(hf: tuple[Any, Any], llm: Any) -> None:
    tokenizer, model = hf
    for prompt in [*PROMPTS, "The zhisuan platform serves"]:
        if prompt.endswith("serves"):  # raw text, as /v1/completions sends it
            ids = list(tokenizer(prompt)["input_ids"])
            cpp_ids = llm.tokenize(prompt.encode(), add_bos=True, special=False)
        else:
            ids = _chat_ids(tokenizer, prompt)
            text = tokenizer.decode(ids)
            cpp_ids = llm.tokenize(text.encode(), add_bos=False, special=True)
        assert cpp_ids == ids, prompt  # same tokenizer

        expected = _hf_greedy(model, ids, 12)
        llm.reset()
        got: list[int] = []
        for token in llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0):
            got.append(int(token))
            if len(got) == len(expected) or token == llm.token_eos():
                break
        assert got == expected, prompt


@pytest.mark.llamacpp
def test_gguf_chat_completion_uses_the_embedded_template(hf: tuple[Any, Any], llm: Any) -> None:
    tokenizer, model = hf
    out = llm.create_chat_completion(
        [{"role": "user", "content": "Hello!"}], temperature=0.0, max_tokens=MAX_NEW
    )
    expected = _hf_greedy(model, _chat_ids(tokenizer, "Hello!"), MAX_NEW)
    assert out["choices"][0]["message"]["content"].strip() == (
        tokenizer.decode(expected, skip_special_tokens=True).strip()
    )
    assert out["choices"][0]["finish_reason"] == "stop"
