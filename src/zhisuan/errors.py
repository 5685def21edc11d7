"""One error hierarchy for the whole platform, mapped to HTTP in one place.

::

    ZhisuanError                      500  server_error (base; never raised bare)
    ├── UserError                     400  invalid_request_error  (caller can fix it)
    │   ├── InvalidParameter          400  names the ``param``
    │   ├── ContextLengthExceeded     400  code=context_length_exceeded, states the limit
    │   ├── ImportRefused             400  a model import that must not proceed
    │   └── PlanError                 400  an impossible or malformed plan
    ├── NotFound                      404  model_not_found / not_found (carries close names)
    ├── AuthenticationError           401  invalid_api_key
    ├── PermissionDenied              403  model not allowed for this key or tenant
    ├── RateLimited                   429  carries ``retry_after`` seconds
    ├── PayloadTooLarge               413
    ├── EngineUnavailable             503  retryable: no healthy replica, a worker died
    └── DeadlineExceeded              504  a request ended at the time it reserved

Errors carry data a caller can act on (``param``, ``retry_after``, ``suggestions``,
``retryable``, ``hint``). The gateway turns them into OpenAI error bodies in
``zhisuan.gateway._errors``; the CLI prints ``str(err)`` plus ``err.hint`` on one line, and
the admin API adds the hint to its error bodies (``to_body(with_hint=True)``).
Never map a bare ``ValueError`` to 400: that hides server bugs as client errors.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ZhisuanError(Exception):
    """Base of every error zhisuan raises on purpose."""

    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "server_error"
    default_code: ClassVar[str | None] = None
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.default_code
        self.hint = hint

    def to_body(self, *, with_hint: bool = False) -> dict[str, Any]:
        """The OpenAI error body: ``{"error": {"message", "type", "param", "code"}}``.

        Args:
            with_hint: add ``hint`` to the error (what to do about it, as the CLI prints it
                after the message; null when there is none), as the admin API does.
        """
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.error_type,
            "param": self.param,
            "code": self.code,
        }
        if with_hint:
            error["hint"] = self.hint
        return {"error": error}


class UserError(ZhisuanError):
    """Input the caller can fix."""

    status_code = 400
    error_type = "invalid_request_error"


class InvalidParameter(UserError):
    default_code = "invalid_parameter"


class ContextLengthExceeded(UserError):
    default_code = "context_length_exceeded"

    def __init__(self, *, prompt_tokens: int, limit: int, requested: int = 0) -> None:
        total = prompt_tokens + requested
        super().__init__(
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{total} tokens ({prompt_tokens} in the prompt, {requested} for the completion). "
            "Please reduce the length of the prompt or the completion.",
            param="messages",
        )
        self.limit = limit
        self.prompt_tokens = prompt_tokens


class ImportRefused(UserError):
    default_code = "import_refused"


class PlanError(UserError):
    default_code = "impossible_plan"


class NotFound(ZhisuanError):
    status_code = 404
    error_type = "invalid_request_error"
    default_code = "not_found"

    def __init__(
        self,
        message: str,
        *,
        suggestions: list[str] | None = None,
        param: str | None = None,
        code: str | None = None,
        otherwise: str | None = None,
    ) -> None:
        """``otherwise``: the hint when nothing comes close (where to look them up)."""
        self.suggestions = list(suggestions or [])
        hint = f"did you mean: {', '.join(self.suggestions)}?" if self.suggestions else otherwise
        super().__init__(message, param=param, code=code, hint=hint)


class AuthenticationError(ZhisuanError):
    status_code = 401
    error_type = "invalid_request_error"
    default_code = "invalid_api_key"


class PermissionDenied(ZhisuanError):
    status_code = 403
    error_type = "invalid_request_error"
    default_code = "model_not_allowed"


class RateLimited(ZhisuanError):
    status_code = 429
    error_type = "rate_limit_exceeded"
    default_code = "rate_limit_exceeded"
    retryable = True

    def __init__(self, message: str, *, retry_after: float, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = max(1.0, retry_after)


class PayloadTooLarge(ZhisuanError):
    status_code = 413
    error_type = "invalid_request_error"
    default_code = "payload_too_large"


class EngineUnavailable(ZhisuanError):
    status_code = 503
    error_type = "server_error"
    default_code = "engine_unavailable"
    retryable = True


class DeadlineExceeded(ZhisuanError):
    status_code = 504
    error_type = "server_error"
    default_code = "deadline_exceeded"


def closest(name: str, candidates: list[str], n: int = 3) -> list[str]:
    """Names in ``candidates`` closest to ``name`` (for "did you mean" hints)."""
    import difflib

    lowered = {c.lower(): c for c in candidates}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.4)
    if not hits:
        hits = [c for c in lowered if name.lower() in c or c in name.lower()][:n]
    return [lowered[h] for h in hits]
