"""The request-level alternative to :class:`~zhisuan.engines.base.Engine`.

Some engines are whole OpenAI-compatible servers already (vLLM, SGLang, TGI, Ollama, a
cloud API). They apply their own chat template and count their own tokens, so they do
not fit ``render_chat``/``generate``. Such an engine implements :class:`PassThrough`
instead, and the worker forwards each validated request to it.

Contract:

- The worker has already validated ``body`` with the shared ``zhisuan.protocol`` models
  and checked that ``body["model"]`` is this replica's public name; the engine forwards
  the original dict, so fields zhisuan does not model (``tools``, ``response_format`` …)
  reach the upstream unchanged. A chat or text completion that states no budget arrives
  with the one the gateway reserved for it as ``max_tokens`` (the protocol's default, or
  :data:`~zhisuan.engines.options.UNKNOWN_CONTEXT_COMPLETION` where the deployment sets no
  ``context_length``), so the upstream's own default cannot pass it.
- ``forward_json`` returns the upstream's JSON body with ``model`` rewritten to the public
  name and ``usage`` present (estimated if the upstream gave none).
- ``forward_stream`` yields complete SSE events (``b"data: …\\n\\n"``) ending with
  ``data: [DONE]``, with ``model`` rewritten; a final usage chunk (``choices: []``) is
  yielded only when ``include_usage`` is true. It raises before its first item when
  the upstream refuses the request, so the worker can still answer with a status code.
  Closing the iterator early closes the upstream connection.
- Errors: a 4xx from the upstream raises the matching ``zhisuan.errors.ZhisuanError``
  carrying the upstream's message, ``param`` and ``code``; an unreachable upstream or a
  5xx raises ``EngineUnavailable``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol, runtime_checkable

from zhisuan.engines.base import EngineInfo


@runtime_checkable
class PassThrough(Protocol):
    """An engine that serves whole OpenAI requests (see the module docstring)."""

    info: EngineInfo

    async def forward_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Forward a non-streaming request.

        Args:
            path: the OpenAI path below ``/v1``, e.g. ``"/chat/completions"``.
            body: the client's validated request body.

        Returns:
            The response body, ``model`` rewritten to the public name.

        Raises:
            zhisuan.errors.ZhisuanError: the upstream refused or failed the request.
        """
        ...

    def forward_stream(
        self, path: str, body: dict[str, Any], *, include_usage: bool
    ) -> AsyncIterator[bytes]:
        """Forward a streaming request and yield SSE events.

        Args:
            path: ``"/chat/completions"`` or ``"/completions"``.
            body: the client's validated request body (``stream`` is true).
            include_usage: emit the final usage chunk.

        Raises:
            zhisuan.errors.ZhisuanError: the upstream refused or failed the request.
        """
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class ReportsLoad(Protocol):
    """Optional: an engine that knows its own load (shown by ``GET /health``).

    ``stats()`` returns an object (or a dict) with ``active`` (sequences running) and
    ``waiting`` (requests queued), and optionally ``busy_seconds`` (time the device spent
    working since start). Without it the worker reports its own requests in flight and
    the seconds during which at least one was.
    """

    def stats(self) -> Any:
        """The engine's load counters (see the class docstring)."""
        ...
