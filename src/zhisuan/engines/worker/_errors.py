"""Exceptions to OpenAI error responses in the worker (bodies: ``zhisuan.protocol.errors``).

Exceptions that are not ``ZhisuanError`` are bugs or engine failures: they are logged with
their traceback and answered 503 without internals, never 400.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from zhisuan.errors import EngineUnavailable, ZhisuanError
from zhisuan.protocol import errors as http_errors
from zhisuan.protocol.errors import error_response, from_validation_error, param_of

__all__ = [
    "engine_failure",
    "error_response",
    "from_validation_error",
    "install_error_handlers",
    "param_of",
]

logger = logging.getLogger(__name__)


def engine_failure(exc: BaseException, request_id: str) -> ZhisuanError:
    """Wrap an unexpected engine exception as 503, logging its traceback.

    Args:
        exc: the exception the engine raised.
        request_id: for the log line.

    Returns:
        ``exc`` itself when it is already a ``ZhisuanError``, else an ``EngineUnavailable``.
    """
    if isinstance(exc, ZhisuanError):
        return exc
    logger.error("%s: engine failure", request_id, exc_info=exc)
    return EngineUnavailable(f"the engine failed: {type(exc).__name__}")


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error raised in ``app`` with an OpenAI error body (unexpected: 503).

    Args:
        app: the worker's FastAPI application.
    """

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.error("%s %s: unexpected error", request.method, request.url.path, exc_info=exc)
        return error_response(EngineUnavailable("internal error in the worker"))

    http_errors.install_error_handlers(app, on_unexpected)
