"""OpenAI wire types shared by the gateway and the engine workers.

Both sides validate with the same models, so a request the gateway accepts is one a
worker accepts. Unknown fields are ignored (clients send extras), but fields we accept
are checked strictly and a failure names the ``param``.
"""

from __future__ import annotations

from zhisuan.protocol._chat import (
    ChatCompletionRequest,
    ChatMessage,
    StreamOptions,
)
from zhisuan.protocol._common import SamplingParams, Usage, new_id
from zhisuan.protocol._completions import CompletionRequest
from zhisuan.protocol._embeddings import EmbeddingRequest

__all__ = [
    "ChatCompletionRequest",
    "ChatMessage",
    "CompletionRequest",
    "EmbeddingRequest",
    "SamplingParams",
    "StreamOptions",
    "Usage",
    "new_id",
]
