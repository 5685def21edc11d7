"""Reading an upstream's Server-Sent Events stream as the SSE specification does.

The `event-stream interpretation`_ of the HTML standard, reduced to what an OpenAI client
reads (the ``openai`` SDKs decode streams the same way):

- the bytes are UTF-8 (a leading byte-order mark is dropped) and lines end at CRLF, LF or
  CR, and nowhere else: a raw U+2028 or U+0085 inside a JSON string is not a line end,
  although ``str.splitlines`` (and so ``httpx.Response.aiter_lines``) takes it for one;
- an event ends at a blank line, and its ``data:`` lines are joined with ``"\\n"`` (a JSON
  body may be spread over several);
- a line starting with ``:`` is a comment; a line ``name: value`` loses one space after
  the colon; ``event:``, ``id:``, ``retry:`` and unknown fields do not change the data;
- an event without a ``data:`` line is not dispatched, nor is one the stream ends
  inside, before its blank line.

.. _event-stream interpretation:
   https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterable
from contextlib import aclosing

_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOM = "\ufeff"


async def _lines(chunks: AsyncIterable[bytes]) -> AsyncGenerator[str, None]:
    """The lines of an SSE byte stream, decoded, without their ends; the last line, if
    it has no end, is dropped (it could only belong to an event that never ends)."""
    pending: list[bytes] = []  # the current line's start, from earlier chunks
    after_cr = False  # the last chunk ended in CR: an LF opening the next one is its CRLF
    first = True
    async for chunk in chunks:
        if not chunk:
            continue
        if after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        after_cr = chunk.endswith(b"\r")
        *lines, rest = _LINE_END.split(chunk)
        if lines and pending:
            lines[0] = b"".join([*pending, lines[0]])
            pending.clear()
        if rest:
            pending.append(rest)
        for raw in lines:
            line = raw.decode("utf-8", errors="replace")
            if first:
                line = line.removeprefix(_BOM)
                first = False
            yield line


async def sse_data(chunks: AsyncIterable[bytes]) -> AsyncGenerator[str, None]:
    """The ``data`` of each event in an SSE stream (see the module docstring).

    Args:
        chunks: the response body as it arrives, cut anywhere.

    Yields:
        Each dispatched event's data lines joined with ``"\\n"``.
    """
    data: list[str] = []
    async with aclosing(_lines(chunks)) as lines:
        async for line in lines:
            if not line:
                if data:
                    yield "\n".join(data)
                    data = []
                continue
            if line.startswith(":"):
                continue  # a comment (keep-alives, zhisuan's usage counts)
            name, _, value = line.partition(":")
            if name == "data":
                data.append(value.removeprefix(" "))
