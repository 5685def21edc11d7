"""Map errors to OpenAI error bodies, in one place (bodies: ``zhisuan.protocol.errors``).

Handlers are found by the exception's MRO (Starlette), so every :class:`ZhisuanError`
subclass gets its own status from its class attributes. Anything unexpected is a 500 with
a generic message: its details go to the log, never to the client.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from zhisuan.protocol.errors import (
    error_response,
    from_validation_error,
    install_error_handlers,
    param_of,
)

__all__ = ["error_response", "install", "invalid_from_validation", "param_of"]

logger = logging.getLogger(__name__)

invalid_from_validation = from_validation_error


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        body = {
            "error": {
                "message": "internal server error",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        }
        return JSONResponse(body, status_code=500)

    install_error_handlers(app, on_unexpected)
