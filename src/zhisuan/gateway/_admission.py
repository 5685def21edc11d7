"""Admission of one request: allow-lists and quotas, before anything is sent to a replica.

The worst case reserved for a request is an upper bound the gateway can compute without
the model's tokenizer: a byte-level tokenizer never makes more tokens than UTF-8 bytes,
plus a margin per message for the chat template; the completion budget is ``max_tokens``
or, without one, the rest of the model's context.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from zhisuan.cluster import ReplicaSpec
from zhisuan.errors import PermissionDenied, ZhisuanError
from zhisuan.gateway._auth import OFF, Principal
from zhisuan.gateway._context import Gateway
from zhisuan.gateway._exchange import Exchange
from zhisuan.gateway._quota import QuotaLedger

TEMPLATE_MARGIN = 8  # tokens a chat template may add per message
DEFAULT_CONTEXT = 4096


def principal_of(request: Request) -> Principal:
    principal: Principal = getattr(request.state, "principal", OFF)
    return principal


def prompt_upper_bound(parsed: Any) -> int:
    """Tokens the prompt cannot exceed, from its UTF-8 size."""
    if hasattr(parsed, "messages"):
        texts = [m.text() for m in parsed.messages]
        return sum(len(t.encode()) for t in texts) + TEMPLATE_MARGIN * (len(texts) + 1)
    if hasattr(parsed, "prompt_text"):
        return len(parsed.prompt_text().encode()) + TEMPLATE_MARGIN
    if hasattr(parsed, "inputs"):
        inputs = parsed.inputs()
        return sum(len(t.encode()) + 2 for t in inputs)
    return 0


def worst_case_tokens(parsed: Any, context_length: int) -> tuple[int, int]:
    """(prompt, completion) tokens a request may use at most."""
    prompt = min(prompt_upper_bound(parsed), context_length)
    if hasattr(parsed, "inputs"):
        return prompt, 0
    requested = getattr(parsed, "requested_max_tokens", None)
    budget = requested() if callable(requested) else getattr(parsed, "max_tokens", None)
    completion = budget if budget else max(context_length - prompt, 0)
    return prompt, min(completion, context_length)


class Admission:
    """The gateway's ``admit`` step: who may call which model, within which limits."""

    def __init__(self, gw: Gateway, ledger: QuotaLedger | None) -> None:
        self._gw = gw
        self._ledger = ledger

    async def __call__(self, principal: Principal, ex: Exchange) -> None:
        ex.context["tenant"] = principal.tenant
        ex.context["key_prefix"] = principal.key_prefix
        try:
            if not principal.allows(ex.model):
                raise PermissionDenied(
                    f"This API key may not use the model '{ex.model}'.", param="model"
                )
            if principal.scopes and self._ledger is not None:
                self._reserve(principal, ex)
        except ZhisuanError as err:
            ex.error = err.message
            ex.close("rejected", err.status_code)
            self._gw.meter.finish(ex)
            raise
        self._gw.meter.begin(ex)

    def _reserve(self, principal: Principal, ex: Exchange) -> None:
        assert self._ledger is not None
        spec = self._spec(ex.model)
        context = DEFAULT_CONTEXT
        if spec is not None:
            context = int(dict(spec.options).get("context_length") or DEFAULT_CONTEXT)
        prompt, completion = worst_case_tokens(ex.context["request"], context)
        cost = 0.0
        if spec is not None:
            cost = self._gw.meter.pricing(spec).worst_case(prompt, completion)
        ex.context["reservation"] = self._ledger.admit(
            list(principal.scopes), prompt + completion, cost
        )

    def _spec(self, model: str) -> ReplicaSpec | None:
        replicas = self._gw.backend.replicas(model)
        return replicas[0].spec if replicas else None
