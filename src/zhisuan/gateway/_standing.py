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

import re
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


_MODEL = re.compile(rb'"model"\s*:\s*"([^"\\]*)"')
_STREAM = re.compile(rb'"stream"\s*:\s*([a-z]*)')
_FLAGS = {b"true": True, b"false": False, b"null": False}


def peek(body: bytes) -> tuple[str, bool] | None:
    """The model a request names and whether it asks for a stream, read from the body's
    bytes without parsing them.

    The first ``"model": "..."`` and ``"stream": ...`` pairs in the bytes are taken. That
    is a guess the validation then checks (``HotPath._ahead``): a body it reads
    differently (a nested key of that name first, a duplicate key) has its request
    withdrawn and sent the careful way. Reading the bytes costs a fourth of parsing the
    JSON (0.5 against 1.9 µs warm), and on an idle gateway's cold caches it took 20 ± 13
    and 5 ± 9 µs off a request at concurrency 1 (two paired runs, ``docs/gateway-overhead.md``).

    Returns:
        None if no model is named as a plain string (no escapes), or ``stream`` is not
        ``true``, ``false`` or ``null``: such a request takes the careful way, where its
        errors are answered.
    """
    found = _MODEL.search(body)
    if found is None:
        return None
    flag = _STREAM.search(body)
    stream = False if flag is None else _FLAGS.get(flag.group(1))
    if stream is None:
        return None
    try:
        return found.group(1).decode(), stream
    except UnicodeDecodeError:
        return None
