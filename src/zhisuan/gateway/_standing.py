"""Which callers may have a request sent to a replica before it is validated and admitted.

The hot path sends a request ahead of its checks (``HotPath._ahead``, on an idle gateway)
only for a caller in good standing: one the gateway has not refused lately. A caller refused
for its own request (4xx: an invalid body, a model outside its allow-list, a quota
exceeded) takes the careful way, checks first, for :data:`WARY_S`, and every refusal
there starts the wait again, so a caller over its quota keeps costing the replicas
nothing. Standing is kept per tenant: a key's refusal may come from a limit its tenant's
other keys share.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from zhisuan.errors import ZhisuanError
from zhisuan.gateway._auth import Principal

WARY_S = 10.0
"""How long a refused caller's requests are checked before they are sent."""


class Standing:
    """Refusals per tenant, forgotten :data:`WARY_S` after the last one.

    Args:
        clock: monotonic seconds (for tests).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._wary: dict[str, float] = {}

    def good(self, principal: Principal) -> bool:
        """Whether the caller's request may go to a replica before its checks."""
        until = self._wary.get(principal.tenant)
        if until is None:
            return True
        if self._clock() < until:
            return False
        del self._wary[principal.tenant]
        return True

    def refused(self, principal: Principal, err: ZhisuanError) -> None:
        """The caller's request was refused with ``err``; a server-side failure is no
        mark against it."""
        if err.status_code < 500:
            self._wary[principal.tenant] = self._clock() + WARY_S


def peek(body: bytes) -> tuple[str, bool] | None:
    """The model a request names and whether it asks for a stream, read without
    validating the request.

    Returns:
        None if the body is no JSON object naming a model as a string, with a boolean
        ``stream`` if any: such a request takes the careful way, where its errors are
        answered.
    """
    try:
        request = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(request, dict):
        return None
    model, stream = request.get("model"), request.get("stream")
    if not isinstance(model, str) or stream not in (None, False, True):
        return None
    return model, bool(stream)
