"""The admin API's error bodies: OpenAI's, with the ``hint`` the CLI prints for the same
mistake (``{"error": {"message", "type", "param", "code", "hint"}}``).

The checks behind the admin API and the CLI are the store's, and each refusal carries a
one-line reason and a hint. The CLI prints both; the OpenAI endpoints answer OpenAI's body
alone (what an OpenAI client expects). The admin routes answer their errors here, through
:class:`HintedRoute`, so an operator calling the API reads the same hint, in ``hint`` (null
where there is none), next to the same message.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response

from zhisuan.errors import ZhisuanError
from zhisuan.protocol.errors import error_headers, from_validation_error


class ErrorDetail(BaseModel):
    """One error of the admin API."""

    message: str = Field(description="What is wrong, in one line.")
    type: str = Field(description="OpenAI's error type, e.g. invalid_request_error.")
    param: str | None = Field(description="The field or parameter at fault, if one is.")
    code: str | None = Field(description="A stable code, e.g. invalid_parameter, not_found.")
    hint: str | None = Field(
        default=None,
        description="What to do about it: the hint the CLI prints for the same mistake "
        "(null where there is none). Left out where the request is refused before it "
        "reaches a route: for its key (401, 403) or its size (413).",
    )


class AdminError(BaseModel):
    """The body of an admin API error."""

    error: ErrorDetail


RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {
        "model": AdminError,
        "description": "Invalid input: a body or parameter refused, or a value the store "
        "refuses (a budget it cannot keep, a replica count over the cap, ...), with a hint.",
    },
    404: {
        "model": AdminError,
        "description": "A tenant, key, model or deployment that does not exist; the hint "
        "names the close ones.",
    },
    "4XX": {
        "model": AdminError,
        "description": "Another client error: a missing or wrong key (401), a key that is "
        "not an admin key (403), a body too large (413).",
    },
}
"""The admin routes' error answers, for the OpenAPI schema (validation errors are 400s
here, not FastAPI's 422s)."""


def hinted(exc: ZhisuanError) -> JSONResponse:
    """The admin API's answer to ``exc``: its status, headers and body with the hint."""
    return JSONResponse(
        exc.to_body(with_hint=True), status_code=exc.status_code, headers=error_headers(exc)
    )


class HintedRoute(APIRoute):
    """An admin route: its errors, validation errors included, answer with their hint."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                return hinted(from_validation_error(exc))
            except ZhisuanError as exc:
                return hinted(exc)

        return answer
