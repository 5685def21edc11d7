"""Log-probabilities through the worker: OpenAI's shapes for chat and text completions, whole
and streamed, the refusals, and the ``upstream`` relay passing them on as they are.

The worker runs the real transformers engine over the demo model, and the llama.cpp engine
over its GGUF export; the values themselves are checked against a plain forward pass in
``test_logprobs.py`` (engine) and ``tests/server/test_logprobs.py`` (a real gateway), and
the llama.cpp engine's against a second ``Llama`` in ``test_llamacpp_logprobs.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from _worker_fakes import serve

from zhisuan.demo import tiny_chat_dir, tiny_chat_gguf
from zhisuan.engines.base import TokenLogprobs, TokenProb
from zhisuan.engines.upstream import UpstreamEngine
from zhisuan.engines.upstream import load as load_upstream
from zhisuan.engines.worker import create_app, load_engine
from zhisuan.engines.worker._logprobs import FLOOR, chat_logprobs, text_logprobs
from zhisuan.engines.worker._registry import AnyEngine

HELLO = [{"role": "user", "content": "Hello!"}]
PROMPT = "Once upon a time"
UNSUPPORTED = "Unsupported parameter: 'logprobs' is not supported with this model: "


def _entry(raw: bytes, logprob: float, top: list[tuple[bytes, float]], offset: int) -> Any:
    alts = tuple(TokenProb(i, b, v) for i, (b, v) in enumerate(top))
    return TokenLogprobs(TokenProb(99, raw, logprob), alts, offset)


# -- the shapes ---------------------------------------------------------------------------------


def test_the_chat_shape() -> None:
    entries = [_entry(b"Hi", -0.5, [(b"Hi", -0.5), (b"Yo", -1.0)], 0), _entry(b"\xe4", -2.0, [], 2)]
    assert chat_logprobs(entries) == {
        "content": [
            {
                "token": "Hi",
                "logprob": -0.5,
                "bytes": [72, 105],
                "top_logprobs": [
                    {"token": "Hi", "logprob": -0.5, "bytes": [72, 105]},
                    {"token": "Yo", "logprob": -1.0, "bytes": [89, 111]},
                ],
            },
            # part of a character: the bytes that are not text escaped, all of them in bytes
            {"token": "\\xe4", "logprob": -2.0, "bytes": [228], "top_logprobs": []},
        ],
        "refusal": None,
    }


def test_the_text_completion_shape() -> None:
    entries = [
        _entry(b" a", -0.1, [(b" a", -0.1), (b" b", -2.5)], 0),
        _entry(b"\xe4\xbd", -3.0, [(b" c", -0.2)], 2),  # the chosen token is not in the top
        _entry(b"!", float("-inf"), [(b"?", float("-inf"))], 3),
    ]
    out = text_logprobs(entries, prompt_chars=10)
    assert out == {
        "tokens": [" a", "bytes:\\xe4\\xbd", "!"],
        "token_logprobs": [-0.1, -3.0, FLOOR],
        "top_logprobs": [
            {" a": -0.1, " b": -2.5},
            {" c": -0.2, "bytes:\\xe4\\xbd": -3.0},
            {"?": FLOOR, "!": FLOOR},
        ],
        "text_offset": [10, 12, 13],  # from the start of the prompt
    }
    json.dumps(out, allow_nan=False)  # JSON can carry every value


# -- a worker over the transformers engine --------------------------------------------------------


@pytest.fixture(scope="module")
def demo_url() -> Iterator[str]:
    path = tiny_chat_dir()
    if not (path / "config.json").is_file():
        pytest.skip("the demo model zhisuan-tiny-chat is not built")

    def loader() -> AnyEngine:
        return load_engine("transformers", path, model_name="tiny", device="cpu", options={})

    with serve(create_app(loader, model_name="tiny", engine_kind="transformers")) as url:
        yield url


def _post(url: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}/v1/{path}", json={"model": "tiny", **body}, timeout=60)


def _events(url: str, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    body = {"model": "tiny", "stream": True, **body}
    with httpx.stream("POST", f"{url}/v1/{path}", json=body, timeout=60) as resp:
        assert resp.status_code == 200, resp.read()
        data = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


def test_a_chat_answer_and_its_stream(demo_url: str) -> None:
    _assert_chat_shapes(demo_url)


def _assert_chat_shapes(url: str) -> None:
    body = {"messages": HELLO, "max_tokens": 12, "temperature": 0, "logprobs": True}
    body["top_logprobs"] = 3
    answer = _post(url, "chat/completions", body).json()["choices"][0]
    content = answer["logprobs"]["content"]
    assert answer["logprobs"]["refusal"] is None and content
    for item in content:
        assert list(item) == ["token", "logprob", "bytes", "top_logprobs"]
        assert bytes(item["bytes"]).decode() == item["token"]
        assert len(item["top_logprobs"]) == 3
        assert all(list(t) == ["token", "logprob", "bytes"] for t in item["top_logprobs"])
    assert "".join(i["token"] for i in content) == answer["message"]["content"]
    chunks = [e["choices"][0] for e in _events(url, "chat/completions", body)]
    assert chunks[0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[0]["logprobs"] is None and chunks[-1]["logprobs"] is None  # role, finish
    streamed = []
    for chunk in chunks[1:-1]:
        items = chunk["logprobs"]["content"]
        assert "".join(i["token"] for i in items) == chunk["delta"]["content"]
        streamed.extend(items)
    assert _same(streamed, content)


def test_a_text_completion_and_its_stream(demo_url: str) -> None:
    _assert_text_shapes(demo_url)


def _assert_text_shapes(url: str) -> None:
    body = {"prompt": PROMPT, "max_tokens": 10, "temperature": 0, "logprobs": 2}
    answer = _post(url, "completions", body).json()["choices"][0]
    lp = answer["logprobs"]
    assert list(lp) == ["tokens", "token_logprobs", "top_logprobs", "text_offset"]
    n = len(lp["tokens"])
    assert "".join(lp["tokens"]) == answer["text"] and n >= 2
    offsets = [len(PROMPT) + len("".join(lp["tokens"][:i])) for i in range(n)]
    assert lp["text_offset"] == offsets
    for token, value, top in zip(
        lp["tokens"], lp["token_logprobs"], lp["top_logprobs"], strict=True
    ):
        assert top[token] == value and 2 <= len(top) <= 3
        assert max(top.values()) == next(iter(top.values()))
    chunks = [e["choices"][0] for e in _events(url, "completions", body)]
    assert chunks[-1]["logprobs"] is None  # the finish
    joined: dict[str, list[Any]] = {k: [] for k in lp}
    for chunk in chunks[:-1]:
        assert "".join(chunk["logprobs"]["tokens"]) == chunk["text"]
        for key, values in chunk["logprobs"].items():
            joined[key].extend(values)
    assert joined["tokens"] == lp["tokens"] and joined["text_offset"] == lp["text_offset"]
    assert joined["token_logprobs"] == pytest.approx(lp["token_logprobs"], abs=1e-5)


@pytest.mark.parametrize("stream", [False, True])
def test_without_logprobs_every_choice_has_null(demo_url: str, stream: bool) -> None:
    for path, body in [
        ("chat/completions", {"messages": HELLO}),
        ("chat/completions", {"messages": HELLO, "logprobs": False}),
        ("chat/completions", {"messages": HELLO, "logprobs": None, "top_logprobs": None}),
        ("completions", {"prompt": PROMPT}),
        ("completions", {"prompt": PROMPT, "logprobs": None}),
    ]:
        body = {**body, "max_tokens": 4}
        if stream:
            choices = [e["choices"][0] for e in _events(demo_url, path, body)]
        else:
            choices = _post(demo_url, path, body).json()["choices"]
        assert choices and all(c["logprobs"] is None for c in choices)


def _assert_echo_refused(url: str) -> None:
    """An engine that does not score prompts (``test_worker_echo.py``: one that does)."""
    for stream in (False, True):
        body = {"prompt": PROMPT, "logprobs": 1, "echo": True, "stream": stream}
        resp = _post(url, "completions", body)
        assert resp.status_code == 400
        error = resp.json()["error"]
        assert error["message"] == (
            "Setting 'echo' and 'logprobs' at the same time is not supported for this model."
        )
        assert error["param"] == "echo"
    assert _post(url, "completions", {"prompt": PROMPT, "echo": True}).status_code == 200


def test_top_logprobs_without_logprobs_is_refused(demo_url: str) -> None:
    for fields in [{"top_logprobs": 2}, {"logprobs": False, "top_logprobs": 0}]:
        resp = _post(demo_url, "chat/completions", {"messages": HELLO, **fields})
        assert resp.status_code == 400
        error = resp.json()["error"]
        assert (error["param"], error["code"]) == ("top_logprobs", None)  # OpenAI's null
        assert error["message"] == (
            "The 'top_logprobs' parameter is only allowed when 'logprobs' is enabled."
        )


# -- an engine that returns none --------------------------------------------------------------


def _assert_unsupported(resp: httpx.Response, engine: str) -> None:
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert (error["param"], error["code"]) == ("logprobs", "unsupported_parameter")
    assert error["message"] == (
        UNSUPPORTED + f"this deployment's engine ({engine}) does not return log-probabilities."
    )


def test_an_engine_that_does_not_declare_them_refuses(chat_url: str) -> None:
    for stream in (False, True):
        chat = {"model": "fake-chat", "messages": HELLO, "logprobs": True, "stream": stream}
        _assert_unsupported(httpx.post(f"{chat_url}/v1/chat/completions", json=chat), "fake")
        text = {"model": "fake-chat", "prompt": "hi", "logprobs": 0, "stream": stream}
        _assert_unsupported(httpx.post(f"{chat_url}/v1/completions", json=text), "fake")
    plain = {"model": "fake-chat", "messages": HELLO, "max_tokens": 2, "logprobs": False}
    answer = httpx.post(f"{chat_url}/v1/chat/completions", json=plain, timeout=60)
    assert answer.status_code == 200 and answer.json()["choices"][0]["logprobs"] is None


# -- a worker over the llama.cpp engine ---------------------------------------------------------


@pytest.fixture(scope="module")
def llama_url() -> Iterator[str]:
    pytest.importorskip("llama_cpp")
    gguf: Path = tiny_chat_gguf()
    if not gguf.is_file():
        pytest.skip("the demo GGUF is not built")

    def loader() -> AnyEngine:
        options = {"n_ctx": 256, "n_threads": 1}
        return load_engine("llamacpp", gguf, model_name="tiny", device="cpu", options=options)

    with serve(create_app(loader, model_name="tiny", engine_kind="llamacpp")) as url:
        yield url


@pytest.mark.llamacpp
def test_the_llamacpp_engine_answers(llama_url: str) -> None:
    """The shapes, whole and streamed, as the transformers engine's; the values are checked
    against a reference in ``test_llamacpp_logprobs.py``."""
    _assert_chat_shapes(llama_url)
    _assert_text_shapes(llama_url)
    _assert_echo_refused(llama_url)
    for stream in (False, True):
        for path, body in [
            ("chat/completions", {"messages": HELLO}),
            ("completions", {"prompt": PROMPT}),
        ]:
            body = {**body, "max_tokens": 3, "stream": stream}
            if stream:
                choices = [e["choices"][0] for e in _events(llama_url, path, body)]
            else:
                choices = _post(llama_url, path, body).json()["choices"]
            assert choices and all(c["logprobs"] is None for c in choices)


# -- the upstream relay -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def proxy_url(demo_url: str) -> Iterator[str]:
    """An ``upstream`` replica in front of the demo model's worker."""
    options = {"base_url": f"{demo_url}/v1", "upstream_model": "tiny"}

    def loader() -> UpstreamEngine:
        return load_upstream(None, model_name="public", device="cpu", options=options)

    with serve(create_app(loader, model_name="public", engine_kind="upstream")) as url:
        yield url


def test_the_upstream_relays_them_as_they_are(demo_url: str, proxy_url: str) -> None:
    chat = {"messages": HELLO, "max_tokens": 6, "temperature": 0, "logprobs": True}
    chat["top_logprobs"] = 2
    text = {"prompt": PROMPT, "max_tokens": 6, "temperature": 0, "logprobs": 3}
    for path, body in [("chat/completions", chat), ("completions", text)]:
        direct = _post(demo_url, path, body).json()["choices"]
        relayed = httpx.post(
            f"{proxy_url}/v1/{path}", json={**body, "model": "public"}, timeout=60
        ).json()["choices"]
        assert relayed == direct and relayed[0]["logprobs"]
        streamed = _events(demo_url, path, body)
        body = {**body, "model": "public"}
        with httpx.stream("POST", f"{proxy_url}/v1/{path}", json={**body, "stream": True}) as r:
            data = [json.loads(x[6:]) for x in r.iter_lines() if x.startswith("data: {")]
        assert [e["choices"] for e in data] == [e["choices"] for e in streamed]
    with openai.OpenAI(base_url=f"{proxy_url}/v1", api_key="x", max_retries=0) as client:
        answer = client.chat.completions.create(
            model="public",
            messages=HELLO,
            max_tokens=3,
            logprobs=True,  # type: ignore[arg-type]
        )
        assert answer.choices[0].logprobs is not None
        assert answer.choices[0].logprobs.content


def _same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    """The same tokens, with values equal to float noise (a stream may batch apart)."""
    return [x["token"] for x in a] == [x["token"] for x in b] and all(
        abs(x["logprob"] - y["logprob"]) < 1e-5 for x, y in zip(a, b, strict=True)
    )
