"""Exceptions to OpenAI error responses, for the worker only (the gateway has its own).

Every error the worker returns has OpenAI's body ``{"error": {"message", "type", "param",
"code"}}``. Validation errors name the offending ``param`` the way OpenAI does
(``temperature``, ``messages``, ``messages[0].role``). Exceptions that are not
``ZhisuanError`` are bugs or engine failures: they are logged with their traceback and
answered 503 without internals, never 400.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from zhisuan.errors import EngineUnavailable, InvalidParameter, RateLimited, ZhisuanError

logger = logging.getLogger(__name__)

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# pydantic puts union member tags into ``loc`` (("stop", "list[str]")); they are not fields
_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


def error_response(exc: ZhisuanError) -> JSONResponse:
    """The HTTP response for ``exc``: its status and OpenAI error body.

    Args:
        exc: any zhisuan error.

    Returns:
        A JSON response; 429 answers carry ``Retry-After``.
    """
    headers: dict[str, str] = {}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(round(exc.retry_after))
    return JSONResponse(exc.to_body(), status_code=exc.status_code, headers=headers)


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


def param_of(loc: tuple[int | str, ...]) -> str | None:
    """OpenAI's ``param`` for a pydantic error location, e.g. ``messages[0].role``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in {"body", "query"} and not out:
            continue
        elif _IDENT.match(part) and part not in _TYPE_TAGS:
            out += f".{part}" if out else part
    return out or None


def from_validation_error(exc: ValidationError | RequestValidationError) -> InvalidParameter:
    """An ``InvalidParameter`` naming the first invalid field of ``exc``.

    Args:
        exc: a pydantic (or FastAPI request) validation error.

    Returns:
        A 400 error whose ``param`` names the field and whose message says why.
    """
    errors: list[Any] = list(exc.errors())
    if not errors:
        return InvalidParameter("invalid request body")
    first = errors[0]
    param = param_of(tuple(first.get("loc", ())))
    reason = str(first.get("msg", "invalid value"))
    if first.get("type") == "missing":
        message = f"Missing required parameter: '{param}'."
        return InvalidParameter(message, param=param, code="missing_required_parameter")
    message = f"Invalid value for '{param}': {reason}." if param else f"{reason}."
    return InvalidParameter(message, param=param)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error raised in ``app`` with an OpenAI error body.

    A pydantic ``ValidationError`` escaping from our own code is a bug and stays a 500;
    request bodies are validated explicitly (``from_validation_error``).

    Args:
        app: the worker's FastAPI application.
    """

    async def on_zhisuan(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ZhisuanError)
        return error_response(exc)

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(from_validation_error(exc))

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
        logger.error("%s %s: unexpected error", request.method, request.url.path, exc_info=exc)
        return error_response(ZhisuanError("internal error in the worker"))

    app.add_exception_handler(ZhisuanError, on_zhisuan)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
