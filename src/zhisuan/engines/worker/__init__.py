"""The worker process: one model replica served over the OpenAI API on loopback.

Run it with ``python -m zhisuan.engines.worker`` (see ``__main__``). HTTP contract:

- ``GET /health``: 503 ``{"status": "loading"}`` while the engine loads, 503
  ``{"status": "failed", "error": …}`` if loading failed (the process then exits 1), 200
  ``{"status": "ok", "model", "engine", "task", "device", "context_length", "active",
  "waiting", "busy_s"}`` when ready.
- ``GET /v1/models``, ``POST /v1/chat/completions``, ``/v1/completions``,
  ``/v1/embeddings``: OpenAI's API; errors are OpenAI error bodies.
- Request headers from the gateway: ``X-Zhisuan-Usage: always`` (every stream ends with a
  usage chunk and each event carries a ``: usage <prompt> <completion>`` comment line; a
  whole answer has an ``x-zhisuan-usage: <prompt> <completion> <decode ms>`` header, the
  last the milliseconds from its first token to the answer) and
  ``X-Request-Id`` (used as the engine's request id and as the key below).
- ``GET /zhisuan/requests/{request_id}?wait=S``: tokens a generation used, once it has
  settled (``state``: running, finished, cancelled, failed); for metering aborted streams.

Layout, as in vLLM's ``entrypoints/openai``: ``_app`` (thin routers and load state),
``_serving`` (request logic), ``_stream`` (SSE), ``_format`` (response shapes),
``_requests`` (per-request counts), ``_errors`` (exceptions to OpenAI error bodies),
``_registry`` (engine kinds, imported lazily) and ``_passthrough`` (the request-level
interface of engines such as ``upstream``).
"""

from __future__ import annotations

from zhisuan.engines.worker._app import WorkerState, create_app
from zhisuan.engines.worker._format import USAGE_HEADER
from zhisuan.engines.worker._passthrough import PassThrough, ReportsLoad
from zhisuan.engines.worker._registry import ENGINES, load_engine, resolve
from zhisuan.engines.worker._serving import Serving

__all__ = [
    "ENGINES",
    "USAGE_HEADER",
    "PassThrough",
    "ReportsLoad",
    "Serving",
    "WorkerState",
    "create_app",
    "load_engine",
    "resolve",
]
