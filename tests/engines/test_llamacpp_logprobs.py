"""Log-probabilities from the llama.cpp engine, checked against a second ``Llama`` that keeps
every position's logits (``_reference_llamacpp``).

The values are the model's own: the log-softmax of its raw logits, before temperature,
top_p, penalties and ``ignore_eos``'s barring of the end tokens, for the token generated and
the ``k`` most likely at each position, greedy or sampled, from the engine, through the
worker (whole and streamed, chat and text completions). The demo GGUF ``zhisuan-tiny-chat``
gives the values; a tiny random Llama exported to GGUF, whose byte-level vocabulary splits
``你`` across tokens, is made to generate chosen tokens by a logits processor after the
engine's, for the tokens that hold part of a character, stop strings and the end. The rules
both engines share are in ``test_logprobs_rules``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from _forced_llama import Forced
from _logprobs_answers import COUNT, as_entries, chat_entries, run, text_completion_entries
from _reference_llamacpp import (
    ONE_PASS_TOLERANCE,
    assert_matches,
    log_softmax_after,
    prompt_ids,
    reference_llama,
    vocabulary_ids,
)
from _worker_fakes import serve

from zhisuan.demo import tiny_chat_dir
from zhisuan.engines.base import TokenLogprobs
from zhisuan.engines.llamacpp import LlamaCppEngine, load
from zhisuan.engines.llamacpp._logprobs import TokenBytes, Trail
from zhisuan.protocol import SamplingParams

pytestmark = pytest.mark.llamacpp

OPTIONS = {"n_ctx": 512, "n_threads": 2}
NI = "你".encode()  # b"\xe4\xbd\xa0"


@pytest.fixture(scope="module")
def demo(demo_gguf: Path) -> Iterator[LlamaCppEngine]:
    engine = load(demo_gguf, model_name="tiny", device="cpu", options=OPTIONS)
    yield engine
    asyncio.run(engine.close())


@pytest.fixture(scope="module")
def ref(demo_gguf: Path) -> Iterator[Any]:
    llm = reference_llama(demo_gguf)
    yield llm
    llm.close()


def reference(llm: Any, prompt: str, entries: list[TokenLogprobs], **kw: Any) -> Any:
    return log_softmax_after(llm, prompt_ids(llm, prompt), [e.token.id for e in entries], **kw)


# -- token for token against the reference ----------------------------------------------------


def test_the_engine_declares_them(demo: LlamaCppEngine) -> None:
    assert demo.info.logprobs is True


@pytest.mark.parametrize("k", [0, 1, 5, 20])
def test_greedy_values_are_the_models_log_softmax(demo: LlamaCppEngine, ref: Any, k: int) -> None:
    prompt = demo.render_chat(COUNT)
    text, deltas, entries = run(demo, SamplingParams(max_tokens=24, temperature=0, logprobs=k))
    assert deltas[-1].prompt_tokens == len(prompt_ids(ref, prompt))
    assert len(entries) >= 8 and all(d.logprobs is not None for d in deltas)
    assert_matches(as_entries(entries), reference(ref, prompt, entries), k, greedy=True)
    assert b"".join(e.token.bytes for e in entries).decode() == text
    # one pass over prompt and completion: the same values, as llama.cpp rounds a batch
    one_pass = reference(ref, prompt, entries, one_pass=True)
    assert_matches(as_entries(entries), one_pass, k, greedy=False, tolerance=ONE_PASS_TOLERANCE)


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
    demo: LlamaCppEngine, ref: Any, sampling: dict[str, Any]
) -> None:
    prompt = demo.render_chat(COUNT)
    params = SamplingParams(max_tokens=24, logprobs=3, **sampling)
    text, deltas, entries = run(demo, params, ignore_eos=True)
    assert len(entries) == deltas[-1].completion_tokens == 24
    assert_matches(as_entries(entries), reference(ref, prompt, entries), 3, greedy=False)
    # the answer is the one the request gets without log-probabilities
    assert text == run(demo, SamplingParams(max_tokens=24, **sampling), ignore_eos=True)[0]


def test_values_are_before_ignore_eos_bars_the_end(demo: LlamaCppEngine, ref: Any) -> None:
    """Where the model would end, the end token leads the alternatives with the model's value
    (not -inf), and the token generated is another."""
    plain, deltas, entries = run(demo, SamplingParams(max_tokens=80, temperature=0, logprobs=1))
    assert deltas[-1].finish_reason == "stop", "the greedy answer does not end in 80 tokens"
    at = len(entries)  # the position of the end token
    params = SamplingParams(max_tokens=at + 3, temperature=0, logprobs=2)
    text, _, kept = run(demo, params, ignore_eos=True)
    assert len(kept) == at + 3 and text.startswith(plain)
    assert [e.token.id for e in kept[:at]] == [e.token.id for e in entries]
    ends = set(demo._end_ids())
    assert kept[at].top[0].id in ends and kept[at].token.id not in ends
    assert_matches(as_entries(kept), reference(ref, demo.render_chat(COUNT), kept), 2, greedy=False)


def test_a_chinese_prompt_and_the_vocabulary_bytes(demo: LlamaCppEngine, ref: Any) -> None:
    prompt = demo.render_chat([{"role": "user", "content": "你好"}])
    text, _, entries = run(demo, SamplingParams(max_tokens=16, temperature=0, logprobs=4), prompt)
    assert_matches(as_entries(entries), reference(ref, prompt, entries), 4, greedy=True)
    table = {i: raw for raw, i in vocabulary_ids(ref).items()}
    for entry in entries:
        assert entry.token.bytes == table[entry.token.id]
        assert all(t.bytes == table[t.id] for t in entry.top)
    assert b"".join(e.token.bytes for e in entries).decode() == text


def test_tokens_are_named_as_the_transformers_engine_names_them(demo: LlamaCppEngine) -> None:
    """The demo GGUF is the demo HF model's export: every id's bytes are the same as the
    transformers engine gives them, special tokens by their text."""
    from transformers import AutoTokenizer

    from zhisuan.engines.transformers._logprobs import TokenBytes as HFTokenBytes

    if not (tiny_chat_dir() / "config.json").is_file():
        pytest.skip("the demo model zhisuan-tiny-chat is not built")
    theirs = HFTokenBytes(AutoTokenizer.from_pretrained(tiny_chat_dir()))
    ours = TokenBytes(demo._llm)
    n = int(demo._llm.n_vocab())
    assert [ours(i) for i in range(n)] == [theirs(i) for i in range(n)]
    assert ours(int(demo._llm.token_eos())) == b"<|end|>"


# -- the rules of the transformers engine (and test_logprobs_rules) ----------------------------


def test_a_budget_gives_every_token_its_entry(demo: LlamaCppEngine) -> None:
    text, deltas, entries = run(demo, SamplingParams(max_tokens=5, temperature=0, logprobs=0))
    assert deltas[-1].finish_reason == "length"
    assert len(entries) == 5 and all(e.top == () for e in entries)
    assert b"".join(e.token.bytes for e in entries).decode() == text


def test_requests_without_logprobs_get_none_and_pay_nothing(
    demo: LlamaCppEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No log-softmax for a request that does not ask: no processor at all, or only
    ``ignore_eos``'s; a request that asks has its trail first, before the barring."""
    real = demo._llm.generate
    processors: list[list[Any]] = []

    def spy(tokens: list[int], **kwargs: Any) -> Any:
        processors.append(list(kwargs.get("logits_processor") or []))
        return real(tokens, **kwargs)

    monkeypatch.setattr(demo._llm, "generate", spy)
    _, deltas, _ = run(demo, SamplingParams(max_tokens=8, temperature=0))
    assert all(d.logprobs is None for d in deltas)
    sampled = SamplingParams(max_tokens=8, temperature=0.9, seed=1)
    _, deltas, _ = run(demo, sampled, ignore_eos=True)
    assert all(d.logprobs is None for d in deltas)
    assert processors[0] == []
    assert len(processors[1]) == 1 and not isinstance(processors[1][0], Trail)  # the barring
    asking = SamplingParams(max_tokens=8, temperature=0, logprobs=1)
    _, _, entries = run(demo, asking, ignore_eos=True)
    assert len(entries) == 8
    assert len(processors[2]) == 2 and isinstance(processors[2][0], Trail)


# -- tokens that hold part of a character, with chosen tokens -----------------------------------


@pytest.fixture(scope="module")
def split(tiny_gguf: Path) -> Iterator[tuple[LlamaCppEngine, Forced, dict[bytes, int]]]:
    engine = load(tiny_gguf, model_name="r", device="cpu", options={"n_ctx": 256})
    forced = Forced(engine._llm)
    llm = engine._llm
    pieces = {bytes(llm.detokenize([t])): t for t in range(int(llm.n_vocab()))}
    assert NI[:1] in pieces and NI[1:] in pieces  # 你 splits as \xe4 + \xbd\xa0
    yield engine, forced, pieces
    asyncio.run(engine.close())


@pytest.fixture(scope="module")
def random_ref(tiny_gguf: Path) -> Iterator[Any]:
    llm = reference_llama(tiny_gguf, n_ctx=256)
    yield llm
    llm.close()


def _script(split: tuple[LlamaCppEngine, Forced, dict[bytes, int]], *parts: bytes) -> list[int]:
    """``parts``' tokens, then EOS."""
    engine, forced, pieces = split
    forced.script = [pieces[p] for p in parts] + [int(engine._llm.token_eos())]
    return forced.script


PROMPT = "The quick"


def test_tokens_holding_part_of_a_character_ride_with_its_text(
    split: tuple[LlamaCppEngine, Forced, dict[bytes, int]], random_ref: Any
) -> None:
    engine = split[0]
    script = _script(split, b"H", b"i", NI[:1], NI[1:], b"!", b"a")
    _, deltas, entries = run(engine, SamplingParams(max_tokens=20, logprobs=2), PROMPT)
    assert [d.text for d in deltas] == ["H", "i", "你", "!", "a", ""]
    ids = [[e.token.id for e in d.logprobs or []] for d in deltas]
    assert ids == [[script[0]], [script[1]], script[2:4], [script[4]], [script[5]], []]
    assert [e.offset for e in entries] == [0, 1, 2, 2, 3, 4]
    # the model's values for the tokens forced on it, not the forcing processor's 0
    ref = reference(random_ref, PROMPT, entries)
    assert_matches(as_entries(entries), ref, 2, greedy=False)
    assert all(e.token.logprob < -1.0 for e in entries)


@pytest.mark.parametrize(
    ("stop", "text", "kept"),
    [
        (["!"], "Hi你", 4),  # H, i, \xe4, \xbd\xa0; the "!" that completed it is cut off
        (["你!"], "Hi", 2),  # both pieces of the character inside the stop string are dropped
        (["\xbd"], "Hi你!a", 6),  # not a character of the text: no stop
        (["i你"], "H", 1),
    ],
)
def test_a_stop_string_drops_the_tokens_it_cut_off(
    split: tuple[LlamaCppEngine, Forced, dict[bytes, int]], stop: list[str], text: str, kept: int
) -> None:
    engine = split[0]
    script = _script(split, b"H", b"i", NI[:1], NI[1:], b"!", b"a")
    params = SamplingParams(max_tokens=20, logprobs=1, stop=stop)
    got, deltas, entries = run(engine, params, PROMPT)
    assert got == text
    assert [e.token.id for e in entries] == script[:kept]
    assert all(d.logprobs is not None for d in deltas)


def test_an_unfinished_character_at_the_end_comes_with_the_last_text(
    split: tuple[LlamaCppEngine, Forced, dict[bytes, int]],
) -> None:
    engine = split[0]
    script = _script(split, b"H", b"i", NI[:1])  # ends by EOS inside a character
    _, deltas, entries = run(engine, SamplingParams(max_tokens=20, logprobs=0), PROMPT)
    assert [(d.text, [e.token.id for e in d.logprobs or []]) for d in deltas] == [
        ("H", [script[0]]),
        ("i", [script[1]]),
        ("\ufffd", [script[2]]),  # the EOS has none
    ]
    _script(split, b"H", NI[:1], NI[1:2], b"i")  # the budget ends inside a character
    text, deltas, entries = run(engine, SamplingParams(max_tokens=3, logprobs=0), PROMPT)
    assert (text, deltas[-1].finish_reason, len(entries)) == ("H\ufffd", "length", 3)
    assert deltas[-1].logprobs is not None and len(deltas[-1].logprobs) == 2


# -- through the worker ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(demo_gguf: Path) -> Iterator[tuple[openai.OpenAI, LlamaCppEngine]]:
    served: list[LlamaCppEngine] = []

    def loader() -> LlamaCppEngine:
        served.append(load(demo_gguf, model_name="tiny-gguf", device="cpu", options=OPTIONS))
        return served[0]

    from zhisuan.engines.worker import create_app

    app = create_app(loader, model_name="tiny-gguf", engine_kind="llamacpp")
    with (
        serve(app) as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as c,
    ):
        yield c, served[0]


SAMPLING: list[Any] = [
    pytest.param({"temperature": 0}, id="greedy"),
    pytest.param(
        {"temperature": 1.2, "top_p": 0.9, "seed": 7, "presence_penalty": 0.5}, id="sampled"
    ),
]


@pytest.mark.parametrize("sampling", SAMPLING)
def test_chat_through_the_worker_whole_and_streamed(
    client: tuple[openai.OpenAI, LlamaCppEngine], ref: Any, sampling: dict[str, Any]
) -> None:
    oai, engine = client
    messages: Any = COUNT
    kw: dict[str, Any] = {"model": "tiny-gguf", "messages": messages, "max_tokens": 20}
    answer = oai.chat.completions.create(logprobs=True, top_logprobs=3, **kw, **sampling)
    choice = answer.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    assert "".join(i.token for i in choice.logprobs.content) == choice.message.content
    ids_of = vocabulary_ids(ref)
    entries = chat_entries(choice.logprobs.content, ids_of)
    prompt = prompt_ids(ref, engine.render_chat(COUNT))
    assert answer.usage is not None and answer.usage.prompt_tokens == len(prompt)
    ref_rows = log_softmax_after(ref, prompt, [t for t, _, _ in entries])
    assert_matches(entries, ref_rows, 3, greedy=sampling["temperature"] == 0)
    items: list[Any] = []
    text = ""
    for chunk in oai.chat.completions.create(
        logprobs=True, top_logprobs=3, stream=True, **kw, **sampling
    ):
        delta, logprobs = chunk.choices[0].delta, chunk.choices[0].logprobs
        if logprobs is None:  # the role's chunk and the finish's
            assert not delta.content
            continue
        assert logprobs.content is not None
        assert "".join(i.token for i in logprobs.content) == delta.content
        items.extend(logprobs.content)
        text += delta.content or ""
    assert text == choice.message.content  # the seed repeats the sampled answer
    streamed = chat_entries(items, ids_of)
    assert [t for t, _, _ in streamed] == [t for t, _, _ in entries]
    assert_matches(streamed, ref_rows, 3, greedy=sampling["temperature"] == 0)


@pytest.mark.parametrize("sampling", SAMPLING)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_text_completion_through_the_worker(
    client: tuple[openai.OpenAI, LlamaCppEngine],
    ref: Any,
    sampling: dict[str, Any],
    stream: bool,
) -> None:
    oai = client[0]
    k, prompt = 3, "Once upon a time"
    args: dict[str, Any] = {"model": "tiny-gguf", "prompt": prompt, "max_tokens": 12, "logprobs": k}
    if stream:
        choices = [c.choices[0] for c in oai.completions.create(**args, **sampling, stream=True)]
    else:
        choices = oai.completions.create(**args, **sampling).choices
    entries = text_completion_entries(choices, prompt, k, vocabulary_ids(ref), stream=stream)
    ids = [t for t, _, _ in entries]
    rows = log_softmax_after(ref, prompt_ids(ref, prompt), ids)
    assert_matches(entries, rows, k, greedy=sampling["temperature"] == 0)


# -- the trail ---------------------------------------------------------------------------------


def test_a_trail_keeps_the_log_softmax_of_the_raw_logits() -> None:
    import math

    import numpy as np

    trail = Trail(2, lambda token: bytes([65 + token]))  # type: ignore[arg-type]
    scores = np.array([1.0, 3.0, 2.0, -np.inf], dtype=np.float32)
    assert trail(None, scores) is scores and scores.tolist() == [1.0, 3.0, 2.0, -math.inf]
    trail.add(2, 0)
    norm = math.log(math.exp(1.0) + math.exp(3.0) + math.exp(2.0))
    trail(None, scores)
    trail.add(3, 1)
    first, second = trail.take(2)
    assert first.token.bytes == b"C" and abs(first.token.logprob - (2.0 - norm)) < 1e-6
    assert [(t.id, t.bytes) for t in first.top] == [(1, b"B"), (2, b"C")]
    assert abs(first.top[0].logprob - (3.0 - norm)) < 1e-6
    assert second.token.logprob == -math.inf and second.offset == 1
    with pytest.raises(RuntimeError):
        trail.add(1, 2)  # no step scored since the last token


def test_a_trail_lets_a_token_out_with_the_first_of_its_text() -> None:
    import numpy as np

    trail = Trail(0, lambda token: b"x")  # type: ignore[arg-type]
    for token, offset in [(0, 0), (1, 1), (2, 2), (0, 2), (1, 5)]:
        trail(None, np.zeros(3, dtype=np.float32))
        trail.add(token, offset)
    assert [e.token.id for e in trail.take(2)] == [0, 1]
    assert trail.take(2) == []
    assert [e.token.id for e in trail.take(5)] == [2, 0]
    assert [e.token.id for e in trail.take(5, everything=True)] == [1]
