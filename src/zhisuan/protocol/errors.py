"""OpenAI error bodies over HTTP, shared by the gateway and the workers.

Every error either side returns has OpenAI's body ``{"error": {"message", "type", "param",
"code"}}``. Validation errors name the offending ``param`` the way OpenAI does
(``temperature``, ``messages``, ``messages[0].role``), and a field of the wrong JSON type
is worded as OpenAI words it (``Invalid type for 'stream': expected a boolean, but got a
string instead.``, code ``invalid_type``; ``zhisuan.protocol._type_errors``). What counts as
an *unexpected* error differs (a gateway bug is a 500, a worker's engine failure a 503), so
each side passes its own handler for those to :func:`install_error_handlers`.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from zhisuan.errors import InvalidParameter, RateLimited, ZhisuanError
from zhisuan.protocol._common import CODE, VERBATIM
from zhisuan.protocol._type_errors import expected, is_tag, is_type_error, json_kind, reported


def error_headers(exc: ZhisuanError) -> dict[str, str]:
    """The headers an error answer carries: ``Retry-After`` on 429, ``WWW-Authenticate`` on 401."""
    if isinstance(exc, RateLimited):
        return {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}  # never too early
    if exc.status_code == 401:
        return {"WWW-Authenticate": "Bearer"}
    return {}


def error_response(exc: ZhisuanError) -> JSONResponse:
    """The HTTP response for ``exc``: its status, OpenAI error body and :func:`error_headers`.

    Args:
        exc: any zhisuan error.

    Returns:
        A JSON response.
    """
    return JSONResponse(exc.to_body(), status_code=exc.status_code, headers=error_headers(exc))


def param_of(loc: tuple[int | str, ...]) -> str | None:
    """OpenAI's ``param`` for a pydantic error location, e.g. ``messages[0].role``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in {"body", "query"} and not out:
            continue
        elif not is_tag(part):
            out += f".{part}" if out else part
    return out or None


def from_validation_error(
    exc: ValidationError | RequestValidationError, model: type[BaseModel] | None = None
) -> InvalidParameter:
    """An ``InvalidParameter`` naming the first invalid field of ``exc``.

    A field of the wrong JSON type is answered as OpenAI answers it (``Invalid type for
    'messages[0].content': expected one of a string or array of objects, but got an integer
    instead.``, code ``invalid_type``); a missing one too (``missing_required_parameter``);
    a refusal in OpenAI's own words (``zhisuan.protocol._common.refusal``) as it is, with
    OpenAI's code (``null`` where OpenAI sends none); any other refusal says pydantic's or
    the validator's reason.

    Args:
        exc: a pydantic (or FastAPI request) validation error.
        model: the model that raised ``exc``, whose schema says exactly what a field of the
            wrong type takes (``an array of objects``); without it the error says less
            (``an array``).

    Returns:
        A 400 error whose ``param`` names the field and whose message says why.
    """
    errors: list[dict[str, Any]] = [dict(e) for e in exc.errors()]
    if not errors:
        return InvalidParameter("invalid request body")
    first = reported(errors)
    param = param_of(tuple(first.get("loc", ())))
    if first.get("type") == "missing":
        message = f"Missing required parameter: '{param}'."
        return InvalidParameter(message, param=param, code="missing_required_parameter")
    if is_type_error(first):
        what = f"'{param}'" if param else "the request body"
        message = (
            f"Invalid type for {what}: expected {expected(first, model)}, "
            f"but got {json_kind(first.get('input'))} instead."
        )
        return InvalidParameter(message, param=param, code="invalid_type")
    reason = str(first.get("msg", "invalid value"))
    ctx = first.get("ctx") or {}
    if ctx.get(VERBATIM):  # OpenAI's whole message, and its code
        refused = InvalidParameter(reason, param=param)
        refused.code = ctx.get(CODE)
        return refused
    message = f"Invalid value for '{param}': {reason}." if param else f"{reason}."
    return InvalidParameter(message, param=param)


def install_error_handlers(
    app: FastAPI, on_unexpected: Callable[[Request, Exception], Awaitable[JSONResponse]]
) -> None:
    """Answer every error raised in ``app`` with an OpenAI error body.

    Args:
        app: a FastAPI application.
        on_unexpected: the answer to an exception that is not a zhisuan or HTTP error.
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

    app.add_exception_handler(ZhisuanError, on_zhisuan)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
