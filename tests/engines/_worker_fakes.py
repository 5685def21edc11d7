"""A small fake of the ``Engine`` interface and a uvicorn-in-a-thread helper.

The fake stands in for the engine, the neighbour of the worker under test; the real
engines have their own tests (and real-engine worker tests run when they are installed).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from zhisuan.engines.base import Delta, Embeddings, EngineInfo, Task
from zhisuan.errors import ContextLengthExceeded
from zhisuan.protocol import SamplingParams

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog"]


class FakeEngine:
    """Deterministic words; one whitespace-separated word is one token.

    Args:
        model: public model name.
        task: chat or embedding.
        context_length: tokens.
        eos_after: tokens generated before a natural stop.
        delay: seconds between tokens.
        fail_after: raise RuntimeError after this many tokens (None: never).
        close_s: seconds ``close`` takes (a worker slow to stop).
    """

    def __init__(
        self,
        model: str = "fake-chat",
        *,
        task: Task = "chat",
        context_length: int = 64,
        eos_after: int = 12,
        delay: float = 0.0,
        fail_after: int | None = None,
        dim: int = 8,
        close_s: float = 0.0,
    ) -> None:
        self.info = EngineInfo(model, "fake", task, context_length, "cpu")
        self.eos_after = eos_after
        self.delay = delay
        self.fail_after = fail_after
        self.dim = dim
        self.close_s = close_s
        self.started: list[str] = []
        self.finished: list[str] = []
        self.aborted: list[str] = []
        self.embedded: list[list[str]] = []
        self.embed_tenants: list[str] = []
        self.closed = False

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        return " ".join(f"<{m['role']}> {m['content']}" for m in messages) + " <assistant>"

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def _script(self, params: SamplingParams) -> tuple[list[str], str]:
        budget = min(params.max_tokens, self.eos_after)
        offset = (params.seed or 0) % len(WORDS) if params.temperature > 0 else 0
        tokens = [(" " if i else "") + WORDS[(i + offset) % len(WORDS)] for i in range(budget)]
        finish = "length" if params.max_tokens < self.eos_after else "stop"
        text = "".join(tokens)
        for stop in params.stop:
            cut = text.find(stop)
            if cut >= 0:
                text, finish = text[:cut], "stop"
        # re-split the (possibly cut) text into the same token pieces
        pieces: list[str] = []
        used = 0
        for tok in tokens:
            if used >= len(text):
                break
            pieces.append(text[used : used + len(tok)])
            used += len(tok)
        return pieces, finish

    async def generate(
        self, prompt: str, params: SamplingParams, request_id: str
    ) -> AsyncIterator[Delta]:
        prompt_tokens = self.count_tokens(prompt)
        if prompt_tokens + params.max_tokens > self.info.context_length:
            raise ContextLengthExceeded(
                prompt_tokens=prompt_tokens,
                limit=self.info.context_length,
                requested=params.max_tokens,
            )
        self.started.append(request_id)
        pieces, finish = self._script(params)
        done = False
        try:
            for i, piece in enumerate(pieces):
                if self.fail_after is not None and i >= self.fail_after:
                    raise RuntimeError("fake engine exploded")
                if self.delay:
                    await asyncio.sleep(self.delay)
                last = i == len(pieces) - 1
                yield Delta(piece, prompt_tokens, i + 1, finish if last else None)  # type: ignore[arg-type]
            if not pieces:
                yield Delta("", prompt_tokens, 0, finish)  # type: ignore[arg-type]
            done = True
            self.finished.append(request_id)
        finally:
            if not done:
                self.aborted.append(request_id)

    async def embed(self, texts: list[str], tenant: str = "") -> Embeddings:
        self.embedded.append(texts)
        self.embed_tenants.append(tenant)
        if self.delay:
            await asyncio.sleep(self.delay)
        vectors = []
        for text in texts:
            digest = hashlib.sha256(text.encode()).digest()
            vectors.append([(b - 128) / 128.0 for b in digest[: self.dim]])
        return Embeddings(vectors, sum(self.count_tokens(t) for t in texts))

    async def close(self) -> None:
        await asyncio.sleep(self.close_s)
        self.closed = True


def load(model_path: Path | None, *, model_name: str, device: str, options: dict[str, Any]) -> Any:
    """Factory for ``--engine _worker_fakes:load`` in subprocess tests (``load_s``: seconds
    the load takes)."""
    time.sleep(options.get("load_s", 0))
    if options.get("fail"):
        raise RuntimeError("the weights are\nbroken")
    return FakeEngine(model_name, **options.get("fake", {}))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve(app: Any, *, wait_ready: bool = True) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free loopback port in a thread; yield its base URL."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    if wait_ready:
        while httpx.get(f"{base}/health").status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("test server did not become ready")
            time.sleep(0.01)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)
