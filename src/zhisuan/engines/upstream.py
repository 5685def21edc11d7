"""The ``upstream`` engine: any OpenAI-compatible server as a zhisuan replica.

vLLM, SGLang, TGI, Ollama or a cloud API already serve the OpenAI protocol with their own
chat template and tokenizer, so this engine implements the worker's request-level
:class:`~zhisuan.engines.worker.PassThrough` interface rather than ``Engine``: the worker
validates a request and this engine forwards the client's JSON as it came, explicit
``null`` values included (``model`` renamed to the upstream's name), then rewrites
``model`` in the answer back to the public name. A request that states no completion
budget comes with the one the gateway reserved (``max_tokens``: 4096 where
``context_length`` is not set; see :mod:`zhisuan.engines.worker._passthrough`).

Usage is always requested upstream (``stream_options.include_usage``, beside any other
``stream_options`` the client sent) so every stream can be metered; the final usage chunk
is passed on only when the worker asks for it. As OpenAI does, every other chunk carries
``"usage": null`` when the client asked for usage, and no ``usage`` key when it did not. If
the upstream sends no usage at all, it is estimated (prompt ≈ characters / 4, completion =
content chunks) and logged as an estimate. The upstream's stream is read as the SSE
specification says (:mod:`zhisuan.engines._upstream_sse`).

Options (``--options`` JSON):
    base_url: the upstream's OpenAI base URL, e.g. ``http://10.0.0.5:8000/v1`` (required).
    api_key_env: NAME of an environment variable holding the key (keys are never stored).
    upstream_model: the model name on the upstream (default: the public name).
    timeout: seconds to wait for an answer (default 600); connecting waits at most 10.
    task: ``chat`` (default) or ``embedding``, for ``/health``.
    context_length: reported by ``/health`` (default 0: unknown); set, a request without
        ``max_tokens`` is sent without one, else with ``max_tokens`` 4096.
    check: probe ``GET {base_url}/models`` when loading (default true).
    stream_usage: ask for ``stream_options.include_usage`` upstream (default true; turn it
        off for servers that reject the field: ``stream_options`` is then never sent, and
        usage is estimated).

Errors: a 4xx from the upstream raises the matching ``ZhisuanError`` with the upstream's
message, ``param`` and ``code``; an unreachable upstream, a 5xx or a rejected key raises
``EngineUnavailable`` (503, retryable).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import httpx

from zhisuan.engines._upstream_sse import sse_data
from zhisuan.engines.base import EngineInfo, Task
from zhisuan.errors import (
    EngineUnavailable,
    InvalidParameter,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    UserError,
    ZhisuanError,
)

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
_DONE = b"data: [DONE]\n\n"


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def upstream_error(resp: httpx.Response) -> ZhisuanError:
    """The zhisuan error for an upstream's error response.

    Args:
        resp: a response with status >= 400 whose body has been read.

    Returns:
        A ``ZhisuanError`` with the upstream's message, ``param`` and ``code``.
    """
    error: dict[str, Any] = {}
    try:
        body = resp.json()
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            error = body["error"]
        elif isinstance(body, dict):
            error = {"message": body.get("message") or body.get("detail")}
    except ValueError:
        pass
    message = str(error.get("message") or resp.text[:300] or resp.reason_phrase)
    param = error.get("param") if isinstance(error.get("param"), str) else None
    code = error.get("code") if isinstance(error.get("code"), str) else None
    status = resp.status_code
    if status >= 500:
        return EngineUnavailable(f"the upstream answered {status}: {message}")
    if status == 401:
        return EngineUnavailable("the upstream rejected the API key (check api_key_env)")
    if status == 403:
        return PermissionDenied(message, code=code)
    if status == 404:
        return NotFound(message, param=param, code=code or "model_not_found")
    if status == 413:
        return PayloadTooLarge(message, code=code)
    if status == 429:
        try:
            retry_after = float(resp.headers.get("retry-after", "1"))
        except ValueError:
            retry_after = 1.0
        return RateLimited(message, retry_after=retry_after, code=code)
    return UserError(message, param=param, code=code)


def _estimate_prompt_tokens(body: dict[str, Any]) -> int:
    source = body.get("messages", body.get("prompt", body.get("input", "")))
    return max(1, len(json.dumps(source, ensure_ascii=False)) // 4)


def _has_text(chunk: dict[str, Any]) -> int:
    for choice in chunk.get("choices") or []:
        if (choice.get("delta") or {}).get("content") or choice.get("text"):
            return 1
    return 0


class UpstreamEngine:
    """Forwards OpenAI requests to an OpenAI-compatible server (a ``PassThrough``).

    Args:
        info: what this replica serves (public name, task …).
        base_url: the upstream's OpenAI base URL (ending in ``/v1`` for most servers).
        upstream_model: the model name on the upstream.
        api_key: sent as a bearer token when set.
        timeout: seconds to wait for an answer.
        ask_usage: send ``stream_options.include_usage`` upstream (some servers reject it).
    """

    def __init__(
        self,
        info: EngineInfo,
        *,
        base_url: str,
        upstream_model: str,
        api_key: str | None = None,
        timeout: float = 600.0,
        ask_usage: bool = True,
    ) -> None:
        self.info = info
        self.ask_usage = ask_usage
        self.base_url = base_url.rstrip("/")
        self.upstream_model = upstream_model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT_S)),
        )

    def _payload(self, body: dict[str, Any], *, stream: bool) -> dict[str, Any]:
        """The client's ``body`` as sent (nulls stay nulls, absent fields absent), with the
        fields this engine must set: ``model``, and on a stream ``stream`` and
        ``stream_options`` (see the module docstring)."""
        payload = {**body, "model": self.upstream_model}
        if not self.ask_usage:
            payload.pop("stream_options", None)  # the upstream rejects the field
        elif stream:
            sent = body.get("stream_options")
            payload["stream_options"] = {
                **(sent if isinstance(sent, dict) else {}),
                "include_usage": True,
            }
        if stream:
            payload["stream"] = True
        return payload

    def _rename(self, obj: dict[str, Any]) -> dict[str, Any]:
        if "model" in obj:
            obj["model"] = self.info.model
        return obj

    async def forward_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Forward a non-streaming request (see ``PassThrough.forward_json``).

        Raises:
            zhisuan.errors.ZhisuanError: the upstream refused, failed or is unreachable.
        """
        payload = self._payload(body, stream=False)
        try:
            resp = await self._client.post(path, json=payload)
        except httpx.HTTPError as exc:
            raise EngineUnavailable(f"the upstream is unreachable: {exc!r}") from exc
        if resp.status_code >= 400:
            raise upstream_error(resp)
        try:
            data = resp.json()
        except ValueError as exc:
            raise EngineUnavailable("the upstream answered with a body that is not JSON") from exc
        if not isinstance(data, dict):
            raise EngineUnavailable("the upstream answered with an unexpected JSON body")
        if not data.get("usage"):
            data["usage"] = self._estimated_usage(body, data)
        return self._rename(data)

    def _estimated_usage(self, body: dict[str, Any], data: dict[str, Any]) -> dict[str, int]:
        prompt = _estimate_prompt_tokens(body)
        completion = 0
        for choice in data.get("choices") or []:
            text = (choice.get("message") or {}).get("content") or choice.get("text") or ""
            completion += len(str(text)) // 4
        logger.info("upstream %s sent no usage; estimated it", self.base_url)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    async def forward_stream(
        self, path: str, body: dict[str, Any], *, include_usage: bool
    ) -> AsyncIterator[bytes]:
        """Forward a streaming request (see ``PassThrough.forward_stream``).

        Raises:
            zhisuan.errors.ZhisuanError: the upstream refused, failed or is unreachable.
        """
        client_asked = bool((body.get("stream_options") or {}).get("include_usage"))
        payload = self._payload(body, stream=True)
        try:
            async with (
                self._client.stream("POST", path, json=payload) as resp,
                aclosing(sse_data(resp.aiter_bytes())) as events,  # read after the check
            ):
                if resp.status_code >= 400:
                    await resp.aread()
                    raise upstream_error(resp)
                usage: dict[str, Any] | None = None
                last: dict[str, Any] = {}
                pieces = 0
                async for data in events:
                    if data.startswith("[DONE]"):  # as the openai SDKs test it
                        break
                    try:
                        obj = json.loads(data)
                    except ValueError:
                        logger.warning("upstream %s sent a non-JSON event", self.base_url)
                        continue
                    if not isinstance(obj, dict):
                        continue
                    if "error" in obj:
                        yield _sse(obj)
                        yield _DONE
                        return
                    last = self._rename(obj)
                    if obj.get("usage"):
                        usage = obj["usage"]
                    if not obj.get("choices"):
                        if usage is not None and include_usage:
                            yield _sse(obj)
                        continue
                    pieces += _has_text(obj)
                    if client_asked:
                        obj.setdefault("usage", None)  # OpenAI's "usage": null
                    else:
                        obj.pop("usage", None)
                    yield _sse(obj)
                if usage is None and include_usage:
                    yield _sse(self._usage_chunk(body, last, pieces))
                yield _DONE
        except httpx.HTTPError as exc:
            raise EngineUnavailable(f"the upstream is unreachable: {exc!r}") from exc

    def _usage_chunk(
        self, body: dict[str, Any], last: dict[str, Any], pieces: int
    ) -> dict[str, Any]:
        prompt = _estimate_prompt_tokens(body)
        completion = pieces  # servers send about one token per content chunk
        logger.info("upstream %s streamed no usage; estimated it", self.base_url)
        return {
            "id": last.get("id", ""),
            "object": last.get("object", "chat.completion.chunk"),
            "created": last.get("created", 0),
            "model": self.info.model,
            "choices": [],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


def _check(base_url: str, api_key: str | None) -> None:
    """Fail fast when the upstream is unreachable or rejects the key."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        resp = httpx.get(f"{base_url.rstrip('/')}/models", headers=headers, timeout=10.0)
    except httpx.HTTPError as exc:
        raise EngineUnavailable(f"the upstream {base_url} is unreachable: {exc!r}") from exc
    if resp.status_code == 401:
        raise EngineUnavailable(f"the upstream {base_url} rejected the API key")
    if resp.status_code >= 400:
        logger.warning("upstream %s: GET /models answered %s", base_url, resp.status_code)


def load(
    model_path: Path | None, *, model_name: str, device: str, options: dict[str, Any]
) -> UpstreamEngine:
    """Connect to an OpenAI-compatible upstream (see the module docstring for options).

    Args:
        model_path: ignored (the weights live upstream).
        model_name: the public model name.
        device: ignored; reported as ``"remote"``.
        options: ``base_url`` (required), ``api_key_env``, ``upstream_model``, ``timeout``,
            ``task``, ``context_length``, ``check``, ``stream_usage``.

    Returns:
        The engine, ready to forward.

    Raises:
        InvalidParameter: an option is missing or malformed, or ``api_key_env`` names an
            unset variable.
        EngineUnavailable: the upstream is unreachable or rejects the key (with ``check``).
    """
    del model_path, device
    base_url = options.get("base_url")
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise InvalidParameter("option base_url (http:// or https:// URL) is required")
    api_key: str | None = None
    key_env = options.get("api_key_env")
    if key_env:
        api_key = os.environ.get(str(key_env))  # the key is read here, never stored
        if not api_key:
            raise InvalidParameter(f"api_key_env names {key_env}, which is not set")
    task: Task = "embedding" if options.get("task") == "embedding" else "chat"
    info = EngineInfo(
        model=model_name,
        engine="upstream",
        task=task,
        context_length=int(options.get("context_length", 0)),
        device="remote",
    )
    if options.get("check", True):
        _check(base_url, api_key)
    return UpstreamEngine(
        info,
        base_url=base_url,
        upstream_model=str(options.get("upstream_model") or model_name),
        api_key=api_key,
        timeout=float(options.get("timeout", 600.0)),
        ask_usage=bool(options.get("stream_usage", True)),
    )
