"""Admission of one request: allow-lists and quotas, before anything is sent to a replica.

The worst case reserved for a request is an upper bound the gateway can compute without
the model's tokenizer: a byte-level tokenizer never makes more tokens than the request
body's bytes, plus a margin per message for the chat template; the completion budget is
``max_tokens`` or, without one, the rest of the model's context. Where the deployment's
options set no ``context_length``, nothing is capped at a guessed context, and a request
without ``max_tokens`` reserves :data:`UNKNOWN_CONTEXT_COMPLETION` tokens, where its worker
ends it (:func:`zhisuan.engines.options.completion_cap`). A request billed by its share of
the device's time has no worst case of its own: from a caller with a money budget it
reserves ``budget_deadline_s`` of the device (the deployment's option, else the setting),
and the proxy ends it when they are up.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from zhisuan.cluster import ReplicaSpec
from zhisuan.engines.options import UNKNOWN_CONTEXT_COMPLETION
from zhisuan.errors import PermissionDenied, ZhisuanError
from zhisuan.gateway._auth import OFF, Principal
from zhisuan.gateway._context import Gateway
from zhisuan.gateway._exchange import Exchange
from zhisuan.gateway._quota import QuotaLedger
from zhisuan.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest

TEMPLATE_MARGIN = 8  # tokens a chat template may add per message


def principal_of(request: Request) -> Principal:
    principal: Principal = getattr(request.state, "principal", OFF)
    return principal


def prompt_upper_bound(parsed: Any, body_bytes: int) -> int:
    """Tokens the prompt cannot exceed, from the size of the request's body.

    JSON never writes a text in fewer bytes than its UTF-8, and a byte-level tokenizer
    never makes more tokens than bytes; the whole body counts, so whatever else a
    template renders from it (tools, a response format) is covered too.
    """
    if isinstance(parsed, ChatCompletionRequest):
        return body_bytes + TEMPLATE_MARGIN * (len(parsed.messages) + 1)
    if isinstance(parsed, CompletionRequest):
        return body_bytes + TEMPLATE_MARGIN
    if isinstance(parsed, EmbeddingRequest):
        return body_bytes + 2 * len(parsed.inputs())
    return 0


def worst_case_tokens(parsed: Any, body_bytes: int, context_length: int | None) -> tuple[int, int]:
    """(prompt, completion) tokens a request may use at most.

    Args:
        parsed: the validated request.
        body_bytes: the size of its body.
        context_length: the model's context, or None where it is not known (a deployment
            without a ``context_length`` option): then nothing is capped at it, and a
            request without ``max_tokens`` reserves :data:`UNKNOWN_CONTEXT_COMPLETION`, as
            much as its worker lets it generate.
    """
    prompt = prompt_upper_bound(parsed, body_bytes)
    if context_length is not None:
        prompt = min(prompt, context_length)
    if isinstance(parsed, EmbeddingRequest):
        return prompt, 0
    if isinstance(parsed, ChatCompletionRequest):
        budget = parsed.requested_max_tokens()
    else:
        budget = getattr(parsed, "max_tokens", None)
    if context_length is None:
        return prompt, UNKNOWN_CONTEXT_COMPLETION if budget is None else budget
    completion = max(context_length - prompt, 0) if budget is None else budget
    return prompt, min(completion, context_length)


def refuse(gw: Gateway, principal: Principal, ex: Exchange, err: ZhisuanError) -> None:
    """Meter a request refused before it reached a replica: ``rejected``, no tokens, the
    refusal's status and message, under the tenant and key that sent it."""
    ex.context["tenant"] = principal.tenant
    ex.context["key_prefix"] = principal.key_prefix
    ex.error = err.message
    ex.close("rejected", err.status_code)
    gw.meter.finish(ex)


class Admission:
    """The gateway's ``admit`` step: who may call which model, within which limits."""

    def __init__(self, gw: Gateway, ledger: QuotaLedger | None) -> None:
        self._gw = gw
        self._ledger = ledger
        self._specs: dict[str, tuple[ReplicaSpec, tuple[int | None, float | None]]] = {}

    async def __call__(self, principal: Principal, ex: Exchange) -> None:
        self.check(principal, ex)

    def check(self, principal: Principal, ex: Exchange) -> None:
        """Admit the request or raise the refusal (metered as ``rejected``).

        Raises:
            ZhisuanError: a model outside the key's allow-list, or a quota exceeded.
        """
        ex.context["tenant"] = principal.tenant
        ex.context["line"] = principal.line  # its tenant header at the worker (``_ends``)
        ex.context["key_prefix"] = principal.key_prefix
        try:
            if not principal.allows(ex.model):
                raise PermissionDenied(
                    f"This API key may not use the model '{ex.model}'.", param="model"
                )
            if principal.scopes and self._ledger is not None:
                self._reserve(principal, ex)
        except ZhisuanError as err:
            refuse(self._gw, principal, ex, err)
            raise
        self._gw.meter.begin(ex)

    def _reserve(self, principal: Principal, ex: Exchange) -> None:
        assert self._ledger is not None
        replicas = self._gw.backend.replicas(ex.model)
        request, size = ex.context["request"], ex.context["body_bytes"]
        if not replicas:
            prompt, completion = worst_case_tokens(request, size, None)
            cost = 0.0
        else:
            spec = replicas[0].spec
            prompt, completion = worst_case_tokens(request, size, self._context(spec))
            deadline = self._deadline(principal, spec)
            cost = self._gw.meter.pricing(spec).worst_case(prompt, completion, deadline or 0.0)
            if deadline is not None:
                ex.context["deadline"] = deadline  # the proxy ends the request then
        ex.context["reservation"] = self._ledger.admit(principal.scopes, prompt + completion, cost)

    def deadline(self, principal: Principal, model: str) -> float | None:
        """Seconds a request to ``model`` may run, where its cost has no bound otherwise:
        billed by device time, from a caller with a money budget (else None)."""
        if not principal.budgeted:
            return None
        replicas = self._gw.backend.replicas(model)
        return self._deadline(principal, replicas[0].spec) if replicas else None

    def _deadline(self, principal: Principal, spec: ReplicaSpec) -> float | None:
        """The deployment's ``budget_deadline_s``, else the setting's."""
        if principal.budgeted and self._gw.meter.pricing(spec).by_device_time:
            return self._options(spec)[1] or self._gw.settings.budget_deadline_s
        return None

    def _context(self, spec: ReplicaSpec) -> int | None:
        """The model's context length, None if unknown."""
        return self._options(spec)[0]

    def _options(self, spec: ReplicaSpec) -> tuple[int | None, float | None]:
        """The deployment's ``context_length`` and ``budget_deadline_s``, None where it
        does not set them (kept per spec: reading them copies the options)."""
        held = self._specs.get(spec.key)
        if held is None or (held[0] is not spec and held[0] != spec):
            options = dict(spec.options)
            length, deadline = options.get("context_length"), options.get("budget_deadline_s")
            read = (int(length) if length else None, float(deadline) if deadline else None)
            held = self._specs[spec.key] = (spec, read)
        return held[1]
