"""The llama.cpp engine's text at the end of a completion: every character the model
generated is sent, whether generation ends by an end-of-generation token, a stop string or
the budget, streamed or not.

llama-cpp-python's completion loop held back the tokens of a character split across them
and, at the end, decoded those tokens one by one with the errors ignored: ``你`` as the
tokens ``\\xe4`` and ``\\xbd\\xa0`` before EOS was lost. The engine tests force such
tokens on a tiny random Llama exported to GGUF (its byte-level vocabulary has both) by a
logits processor added to ``Llama.generate``. An unfinished character at the end is one
U+FFFD, as the transformers engine gives it: the last test compares the two decoders.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from _forced_llama import Forced
from _worker_fakes import serve

from zhisuan.engines.base import Delta
from zhisuan.engines.llamacpp import LlamaCppEngine, load
from zhisuan.engines.llamacpp._text import TokenText
from zhisuan.protocol import SamplingParams

NI = "你".encode()  # b"\xe4\xbd\xa0"


def _text(pieces: list[bytes], stop: list[str]) -> tuple[list[str], bool]:
    text = TokenText(stop)
    out = [text.push(p, final=i == len(pieces) - 1) for i, p in enumerate(pieces)]
    return out, text.stopped


# -- the decoder ----------------------------------------------------------------------------


def test_a_character_split_across_tokens_comes_whole_when_finished() -> None:
    assert _text([b"Hi", NI[:1], NI[1:], b""], []) == (["Hi", "", "你", ""], False)
    assert _text([b"Hi", NI[:1], NI[1:2], NI[2:] + b"!"], []) == (["Hi", "", "", "你!"], False)


def test_an_unfinished_character_at_the_end_is_one_replacement_character() -> None:
    assert _text([b"Hi", NI[:2], b""], []) == (["Hi", "", "\ufffd"], False)
    assert _text([b"Hi", NI[:1]], []) == (["Hi", "\ufffd"], False)
    # a malformed sequence is replaced where it stands, not held to the end
    assert _text([b"a", NI[1:2], b"b", b""], []) == (["a", "\ufffd", "b", ""], False)


def test_the_text_before_a_stop_string_is_whole() -> None:
    assert _text([b"Hi", NI[:1], NI[1:] + b"!x", b"y"], ["!"]) == (["Hi", "", "你", ""], True)
    # a suffix that could begin a stop string waits for the next token
    out, stopped = _text([b"Hi", NI, b"?", b"!"], ["你?!"])
    assert (out, stopped) == (["Hi", "", "", ""], True)
    out, stopped = _text([b"Hi", NI, b"?", b"."], ["你?!"])
    assert (out, stopped) == (["Hi", "", "", "你?."], False)


# -- the engine, with chosen tokens -------------------------------------------------------


@pytest.fixture(scope="module")
def engine(tiny_gguf: Path) -> Iterator[LlamaCppEngine]:
    engine = load(tiny_gguf, model_name="t", device="cpu", options={"n_ctx": 256, "n_threads": 2})
    yield engine
    asyncio.run(engine.close())


@pytest.fixture(scope="module")
def forced(engine: LlamaCppEngine) -> Forced:
    return Forced(engine._llm)


@pytest.fixture(scope="module")
def pieces(engine: LlamaCppEngine) -> dict[bytes, int]:
    """Token ids by their bytes."""
    llm = engine._llm
    ids = {bytes(llm.detokenize([t])): t for t in range(int(llm.n_vocab()))}
    assert NI[:1] in ids and NI[1:] in ids  # 你 splits as \xe4 + \xbd\xa0
    return ids


def _script(engine: LlamaCppEngine, pieces: dict[bytes, int], *parts: bytes) -> list[int]:
    """``Hi``, then the tokens of ``parts``' bytes, then EOS."""
    llm = engine._llm
    hi = list(llm.tokenize(b"Hi", add_bos=False, special=False))
    return hi + [pieces[p] for p in parts] + [int(llm.token_eos())]


def _run(engine: LlamaCppEngine, params: SamplingParams) -> list[Delta]:
    async def go() -> list[Delta]:
        return [d async for d in engine.generate("The quick", params, "t")]

    return asyncio.run(go())


@pytest.mark.llamacpp
def test_a_character_split_across_the_last_tokens_before_eos_is_sent(
    engine: LlamaCppEngine, forced: Forced, pieces: dict[bytes, int]
) -> None:
    forced.script = _script(engine, pieces, NI[:1], NI[1:])  # Hi \xe4 \xbd\xa0 EOS
    deltas = _run(engine, SamplingParams(max_tokens=20, temperature=0.0))
    assert "".join(d.text for d in deltas) == "Hi你"
    assert (deltas[-1].finish_reason, deltas[-1].completion_tokens) == ("stop", 5)  # EOS too


@pytest.mark.llamacpp
def test_an_unfinished_character_before_eos_is_a_replacement_character(
    engine: LlamaCppEngine, forced: Forced, pieces: dict[bytes, int]
) -> None:
    forced.script = _script(engine, pieces, NI[:1])  # Hi \xe4 EOS
    deltas = _run(engine, SamplingParams(max_tokens=20, temperature=0.0))
    assert "".join(d.text for d in deltas) == "Hi\ufffd"
    assert (deltas[-1].finish_reason, deltas[-1].completion_tokens) == ("stop", 4)


@pytest.mark.llamacpp
def test_the_text_before_a_stop_string_is_whole_and_counted_to_it(
    engine: LlamaCppEngine, forced: Forced, pieces: dict[bytes, int]
) -> None:
    forced.script = _script(engine, pieces, NI[:1], NI[1:], b"!", b"H", b"i")
    deltas = _run(engine, SamplingParams(max_tokens=20, temperature=0.0, stop=["!"]))
    assert "".join(d.text for d in deltas) == "Hi你"
    # H, i, \xe4, \xbd\xa0 and the "!" that completed the stop string
    assert (deltas[-1].finish_reason, deltas[-1].completion_tokens) == ("stop", 5)


@pytest.mark.llamacpp
def test_streamed_and_whole_answers_keep_the_last_character(
    tiny_gguf: Path, engine: LlamaCppEngine, pieces: dict[bytes, int]
) -> None:
    from zhisuan.engines.worker import create_app

    served: list[Forced] = []

    def loader() -> LlamaCppEngine:  # the worker closes its engine when it stops
        options = {"n_ctx": 256, "n_threads": 2}
        own = load(tiny_gguf, model_name="t", device="cpu", options=options)
        served.append(Forced(own._llm))
        return own

    app = create_app(loader, model_name="t", engine_kind="llamacpp")
    with (
        serve(app) as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client,
    ):
        for stop, parts in (([], (NI[:1], NI[1:])), (["!"], (NI[:1], NI[1:], b"!", b"H"))):
            served[0].script = _script(engine, pieces, *parts)
            kw: dict[str, Any] = {"model": "t", "prompt": "The", "max_tokens": 20, "stop": stop}
            whole = client.completions.create(temperature=0, **kw)
            chunks = list(
                client.completions.create(
                    temperature=0, stream=True, stream_options={"include_usage": True}, **kw
                )
            )
            streamed = "".join(c.choices[0].text for c in chunks if c.choices)
            assert (whole.choices[0].text, streamed) == ("Hi你", "Hi你"), stop
            assert whole.usage is not None and whole.usage.completion_tokens == 5
            assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


@pytest.mark.llamacpp
@pytest.mark.parametrize(
    ("parts", "stop"),
    [
        ((NI[:1], NI[1:]), []),
        ((NI[:1],), []),
        ((NI[:1], NI[1:2]), []),
        ((NI[1:2], b"a"), []),
        ((NI[:1], b"!", b"a"), ["!"]),
        ((NI[:1], NI[1:], b"!"), ["你!"]),
    ],
)
def test_an_end_reads_as_on_the_transformers_engine(
    engine: LlamaCppEngine,
    pieces: dict[bytes, int],
    tiny_dir: Path,
    parts: tuple[bytes, ...],
    stop: list[str],
) -> None:
    """The transformers engine's detokenizer over the same token ids (the GGUF and
    ``tiny_dir`` share the vocabulary), ended by EOS."""
    from transformers import AutoTokenizer

    from zhisuan.engines.transformers._detok import StopDetokenizer

    ids = _script(engine, pieces, *parts)[:-1]
    hf = StopDetokenizer(AutoTokenizer.from_pretrained(tiny_dir), stop)
    theirs = "".join(hf.step(ids[: i + 1]) for i in range(len(ids))) + hf.step(ids, final=True)
    pieces_ = [bytes(engine._llm.detokenize([t])) for t in ids] + [b""]
    ours, stopped = _text(pieces_, stop)
    assert ("".join(ours), stopped) == (theirs, hf.stopped)


def test_the_offsets_of_the_next_token() -> None:
    """``settled``: where the next token's text starts (an unfinished character not yet);
    ``emitted``: the characters returned, the text held for a stop string not among them."""
    text = TokenText(["!?"])
    seen = []
    for piece in [b"Hi", NI[:1], NI[1:], b"!", b"x"]:
        text.push(piece)
        seen.append((text.settled, text.emitted))
    assert seen == [(2, 2), (2, 2), (3, 3), (4, 3), (5, 5)]
    text = TokenText(["!"])
    text.push(b"Hi")
    text.push(b"!x")
    assert (text.emitted, text.stopped) == (2, True)
