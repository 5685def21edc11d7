"""Map errors to OpenAI error bodies, in one place.

Handlers are found by the exception's MRO (Starlette), so every :class:`ZhisuanError`
subclass gets its own status from its class attributes. Anything unexpected is a 500 with
a generic message: its details go to the log, never to the client.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from zhisuan.errors import InvalidParameter, RateLimited, ZhisuanError

logger = logging.getLogger(__name__)


def error_response(exc: ZhisuanError) -> JSONResponse:
    """The OpenAI error body and status for ``exc`` (with ``Retry-After`` on 429)."""
    headers = {}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return JSONResponse(exc.to_body(), status_code=exc.status_code, headers=headers)


def param_of(loc: tuple[Any, ...] | list[Any]) -> str | None:
    """``("body", "messages", 0, "role")`` → ``"messages[0].role"``."""
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not out:
            out = str(part)
        elif "function-after" in str(part) or "[" in str(part):
            continue  # pydantic's union/validator branch labels, not field names
        else:
            out += f".{part}"
    return out or None


def invalid_from_validation(exc: ValidationError | RequestValidationError) -> InvalidParameter:
    """The first validation error as an :class:`InvalidParameter` naming its field."""
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    param = param_of(tuple(first.get("loc", ())))
    msg = str(first.get("msg", "invalid value"))
    message = f"Invalid value for '{param}': {msg}" if param else f"Invalid request: {msg}"
    return InvalidParameter(message, param=param)


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""

    async def on_zhisuan(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ZhisuanError)
        return error_response(exc)

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(invalid_from_validation(exc))

    async def on_http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        body = {
            "error": {
                "message": str(exc.detail),
                "type": "invalid_request_error",
                "param": None,
                "code": "not_found" if exc.status_code == 404 else None,
            }
        }
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

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

    app.add_exception_handler(ZhisuanError, on_zhisuan)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
